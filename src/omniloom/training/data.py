"""Turn synthetic samples into training examples through the serving code path.

Prompts are built exactly as a chat request would be (chat template, image span, media token
ids), so what the adapter learns is what the server will feed it. Encoder features are computed
once per image: the encoder is frozen in both stages.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import torch

from omniloom.config import ImageSettings, Limits
from omniloom.eval.synthetic import (
    COLOURS,
    SHAPES,
    Question,
    Sample,
    every_position_question,
    random_text,
)
from omniloom.media.image import decode_image
from omniloom.models.registry import LoadedModel
from omniloom.perception.cascade import Perception, imagenet_names, with_article
from omniloom.perception.ocr import OcrLine
from omniloom.processing.image_item import ImageItem, prepare_image
from omniloom.processing.prompt import MediaPart, Message, TextPart, build_prompt

CAPTION_PROMPTS = (
    "Describe the image.",
    "What is in this picture?",
    "Describe this image briefly.",
)


NAME_PROMPTS = (*CAPTION_PROMPTS, "What is in this image?", "What does this image show?")
READ_PROMPTS = ("What does the text say?", "What is written in the image?")
REHEARSAL = 0.25  # share of a ``position`` stage's images that also bring their other questions


@dataclass(frozen=True)
class Example:
    ids: list[int]  # a whole conversation: prompt, answers, end-of-turn tokens
    answer_spans: list[tuple[int, int]]  # [start, end) of each answer and its end-of-turn
    images: tuple[int, ...]  # rows of the feature tensor, in prompt order (none: described)


def image_item(sample: Sample, model: LoadedModel) -> ImageItem:
    buf = io.BytesIO()
    sample.image.save(buf, "PNG")
    decoded = decode_image(buf.getvalue(), Limits())
    return prepare_image(decoded, "low", ImageSettings(), model.tile_layout, model.vlm.media_vocab)


def conversation(
    model: LoadedModel,
    media: list[TextPart | MediaPart],
    turns: list[tuple[str, str]],
    images: tuple[int, ...],
    image_first: bool,
) -> Example:
    """Media as the server sends them (an image's tokens, the perception block that stands for
    it, both, or a video's timed frames), then question–answer turns; each answer carries loss
    (LLaVA's multi-turn form). ``images``: the feature rows of the media's spans, in order."""
    end = model.tokenizer.token_id("<|im_end|>")
    messages: list[Message] = []
    ids: list[int] = []
    spans = []
    for question, answer in turns:
        parts: list[TextPart | MediaPart] = [TextPart(question)]
        if not messages:
            parts = [*media, *parts] if image_first else [*parts, *media]
        messages.append(Message("user", parts))
        prompt = build_prompt(messages, model.template, model.tokenizer).token_ids
        if prompt[: len(ids)] != ids:
            raise ValueError("the chat template does not extend earlier turns unchanged")
        answer_ids = [*model.tokenizer.encode(answer), end]
        spans.append((len(prompt), len(prompt) + len(answer_ids)))
        ids = prompt + answer_ids
        messages.append(Message("assistant", [TextPart(answer)]))
    return Example(ids, spans, images)


def _chunks(items: list, rng: random.Random, longest: int) -> list[list]:
    out = []
    while items:
        size = rng.randint(1, longest)
        out.append(items[:size])
        items = items[size:]
    return out


def hard_negative(sample: Sample, rng: random.Random) -> list[Question]:
    """An absent object that shares its colour or its shape with one that is there ("Is there a
    red square?" beside a red circle), so a yes has to bind colour to shape. Training only: the
    test split keeps the generator's uniformly drawn absent objects, as POPE's random setting."""
    present = {r.words[1:3] for r in sample.regions if len(r.words) > 3}
    near = {
        (c, s)
        for colour, shape in present
        for c in COLOURS
        for s in SHAPES
        if (c == colour) != (s == shape)
    }
    if not (choices := sorted(near - present)):
        return []
    colour, shape = rng.choice(choices)
    return [Question("exists", f"Is there a {colour} {shape} in the image?", "no")]


def build_examples(
    samples: list[Sample],
    model: LoadedModel,
    stage: str,
    seed: int = 0,
    longest: int = 8,
    described: dict[int, Perception] | None = None,
) -> list[Example]:
    """``align``: one caption per image. ``instruct``: each image's questions plus a hard
    negative, shuffled, in conversations of 1 to ``longest`` turns (a caption request joins one
    in five images). ``place``: the same, without captions, with the position question of every
    pair of objects instead of the generator's one pair. Several turns per image put more
    answers in each step for little more compute: the image's tokens are paid once. Images in
    ``described`` (row → what the cascade read from it) come with the cascade's block too, as
    ``hybrid`` serves them. ``position``: see ``_position_groups``."""
    described = described or {}
    rng = random.Random(seed)
    examples = []
    for row, sample in enumerate(samples):
        item = image_item(sample, model)
        caption = [(rng.choice(CAPTION_PROMPTS), sample.caption)]
        if stage == "align":
            groups = [caption]
        elif stage == "position":
            groups = _position_groups(sample, rng, longest)
        else:
            turns = _turns(_questions(sample, stage) + hard_negative(sample, rng))
            turns += caption if stage == "instruct" and rng.random() < 0.2 else []
            rng.shuffle(turns)
            groups = _chunks(turns, rng, longest)
        media: list = [MediaPart(item)]
        if row in described:
            media.append(described[row].as_prompt_part())
        examples += [conversation(model, media, g, (row,), rng.random() < 0.5) for g in groups]
    return examples


def _turns(questions: list[Question]) -> list[tuple[str, str]]:
    """Question–answer turns; the answer is the full reply where the question has one."""
    return [(q.question, q.reply or q.answer) for q in questions]


def _position_groups(sample: Sample, rng: random.Random, longest: int) -> list[list]:
    """``position``: a scene's two position questions (one pair, both orders) as a conversation
    of their own; a ``REHEARSAL`` share of the images also bring their other questions, so what
    the earlier stages taught is rehearsed rather than forgotten."""
    asked = [q for q in sample.questions if q.kind == "position"]
    groups = [_turns(asked)] if asked else []
    if rng.random() < REHEARSAL:
        others = [q for q in sample.questions if q.kind != "position"]
        turns = _turns(others + hard_negative(sample, rng))
        rng.shuffle(turns)
        groups += _chunks(turns, rng, longest)
    return groups


def _questions(sample: Sample, stage: str) -> list[Question]:
    if stage == "instruct":
        return sample.questions
    others = [q for q in sample.questions if q.kind != "position"]
    return others + every_position_question(sample.things)


def perception_examples(model: LoadedModel, count: int, seed: int) -> list[Example]:
    """Conversations about images the model knows only through the perception cascade's block
    (``cascade`` mode): random ImageNet names and sign text, in the server's exact wording, and
    answers that pass on what the block says. The base model drops or garbles the names about
    half the time; these teach the adapter, which runs for such prompts too, to name them."""
    rng = random.Random(seed)
    names = sorted(set(imagenet_names()))
    examples = []
    for _ in range(count):
        labels = rng.sample(names, rng.choice((1, 2, 3)))
        probs = sorted((rng.uniform(0.05, 0.9) for _ in labels), reverse=True)
        text = random_text(rng) if rng.random() < 0.4 else None
        seen = Perception(
            [OcrLine(text, 0.9)] if text else [], list(zip(labels, probs, strict=True))
        )
        shows = "It shows " + " or ".join(with_article(n) for n in labels) + "."
        said = f' The text in it reads "{text}".' if text else ""
        turns = [(rng.choice(NAME_PROMPTS), shows + said)]
        if text:
            turns.insert(rng.randint(0, 1), (rng.choice(READ_PROMPTS), text))
        examples.append(conversation(model, [seen.as_prompt_part()], turns, (), rng.random() < 0.5))
    return examples


def encode_samples(samples: list[Sample], model: LoadedModel, batch: int = 32) -> torch.Tensor:
    """Encoder features (N, tiles·tokens, dim) for each sample's low-detail view."""
    return encode_items([image_item(s, model) for s in samples], model, batch)


@torch.inference_mode()
def encode_items(items: list, model: LoadedModel, batch: int = 32) -> torch.Tensor:
    """Encoder features (N, tiles·tokens, dim) of one-tile image items (low detail)."""
    feats = []
    for start in range(0, len(items), batch):
        tiles = torch.cat([item.tiles() for item in items[start : start + batch]])
        feats.append(model.vlm.encoder(tiles))
    return torch.cat(feats)
