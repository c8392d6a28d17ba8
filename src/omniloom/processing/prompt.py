"""Messages with interleaved media → one token stream with placeholder spans.

The chat template is rendered with a unique sentinel where each media item goes (a template
that takes typed parts writes its own marker, such as ``<image>``, and the markers are numbered
into sentinels in order); the text between sentinels is tokenized (text after a span as text
after a special token, since every span ends in one) and each sentinel is replaced by the
item's token span. The spans record where each item sits and what its content hash and
preprocessing are, which is what prefix and encoder caches key on. Counting (``/tokenize``) and
serving use this one path, so the counts agree by construction.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from omniloom.errors import InvalidRequest
from omniloom.processing.template import ChatTemplate


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def encode_after_special(self, text: str) -> list[int]: ...


class MediaItem(Protocol):
    """A preprocessed media item that knows its own token span."""

    modality: str
    content_hash: str

    def token_ids(self) -> list[int]: ...

    def cache_key(self) -> str: ...


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class MediaPart:
    item: MediaItem


@dataclass(frozen=True)
class Message:
    role: str
    parts: list[TextPart | MediaPart]


@dataclass(frozen=True)
class MediaSpan:
    """Where one media item sits in the stream (markers included) and how to key it."""

    modality: str
    start: int
    length: int
    item: MediaItem

    @property
    def key(self) -> str:
        return f"{self.modality}:{self.item.content_hash}:{self.item.cache_key()}"


@dataclass
class Prompt:
    token_ids: list[int]
    spans: list[MediaSpan] = field(default_factory=list)
    # holds the perception cascade's words for media, for an adapter trained to read them
    describes_media: bool = False

    @property
    def about_media(self) -> bool:
        """Whether media reach the adapter in this prompt, as tokens or as words about them."""
        return bool(self.spans) or self.describes_media

    def tokens_by_modality(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for span in self.spans:
            counts[span.modality] = counts.get(span.modality, 0) + span.length
        counts["text"] = len(self.token_ids) - sum(counts.values())
        return counts


def arrange_media(messages: list[Message], processors: dict) -> list[Message]:
    """The messages with each modality's items as its processor lays them out once it knows all
    of them (its ``arrange``, where it has one: LLaVA-OneVision sends an image that shares its
    prompt with others as one view). Runs before ``build_prompt``, so spans and counts agree."""
    parts = [part for m in messages for part in m.parts if isinstance(part, MediaPart)]
    arranged = {}
    for modality, processor in processors.items():
        items = [part.item for part in parts if part.item.modality == modality]
        arrange = getattr(processor, "arrange", None)
        arranged[modality] = iter(arrange(items) if arrange and items else items)

    def next_part(part):
        if isinstance(part, MediaPart) and part.item.modality in arranged:
            return MediaPart(next(arranged[part.item.modality]))
        return part

    return [Message(m.role, [next_part(part) for part in m.parts]) for m in messages]


def _render_content(parts: list[TextPart | MediaPart], sentinel: str, items: list) -> str:
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, TextPart):
            pieces.append(part.text)
        else:
            pieces.append(f"{sentinel}{len(items)}{sentinel}")
            items.append(part.item)
    return "".join(pieces)


def _typed_parts(parts: list[TextPart | MediaPart], markers: dict[str, str], items: list):
    """List content for templates that take typed parts; media become ``{"type": modality,
    modality: ""}`` (templates test either the type or the key, as Qwen2-Audio's does)."""
    content: list[dict] = []
    for part in parts:
        if isinstance(part, TextPart):
            for modality, marker in markers.items():
                if marker in part.text:
                    raise InvalidRequest(
                        f"Message text may not contain {marker!r}: this model's chat template "
                        f"writes it where {modality} input goes."
                    )
            content.append({"type": "text", "text": part.text})
        else:
            content.append({"type": part.item.modality, part.item.modality: ""})
            items.append(part.item)
    return content


def _number_markers(text: str, markers: dict[str, str], items: list, sentinel: str) -> str:
    """Replace the template's media markers, in order, by numbered sentinels."""
    if not markers:
        return text
    modality_of = {marker: modality for modality, marker in markers.items()}
    count = 0

    def number(match: re.Match) -> str:
        nonlocal count
        if count >= len(items) or items[count].modality != modality_of[match.group()]:
            raise InvalidRequest("The chat template wrote media markers the messages do not have.")
        count += 1
        return f"{sentinel}{count - 1}{sentinel}"

    return re.sub("|".join(re.escape(m) for m in markers.values()), number, text)


def _render(messages: list[Message], template: ChatTemplate, sentinel: str, items: list, **kw):
    """The template's text with a numbered sentinel wherever a media item goes."""
    if template.content_format == "list":
        markers = template.media_markers
        content = [
            {"role": m.role, "content": _typed_parts(m.parts, markers, items)} for m in messages
        ]
        return _number_markers(template.render(content, **kw), markers, items, sentinel)
    content = [
        {"role": m.role, "content": _render_content(m.parts, sentinel, items)} for m in messages
    ]
    return template.render(content, **kw)


def build_prompt(
    messages: list[Message],
    template: ChatTemplate,
    tokenizer: Tokenizer,
    add_generation_prompt: bool = True,
) -> Prompt:
    sentinel = f"\x00{secrets.token_hex(8)}\x00"
    items: list[MediaItem] = []
    text = _render(messages, template, sentinel, items, add_generation_prompt=add_generation_prompt)
    pieces = re.split(f"{re.escape(sentinel)}(\\d+){re.escape(sentinel)}", text)
    prompt = Prompt(token_ids=template.prefix_for(text))
    seen: list[int] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:  # text; after the first piece it follows a span's special token
            encode = tokenizer.encode if i == 0 else tokenizer.encode_after_special
            prompt.token_ids += encode(piece) if piece else []
            continue
        item = items[int(piece)]
        span_ids = item.token_ids()
        prompt.spans.append(MediaSpan(item.modality, len(prompt.token_ids), len(span_ids), item))
        prompt.token_ids += span_ids
        seen.append(int(piece))
    if seen != list(range(len(items))):
        raise InvalidRequest("The chat template dropped or reordered media parts of the messages.")
    return prompt
