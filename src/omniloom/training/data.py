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
from omniloom.eval.synthetic import COLOURS, SHAPES, Question, Sample
from omniloom.media.image import decode_image
from omniloom.models.registry import LoadedModel
from omniloom.processing.image_item import ImageItem, prepare_image
from omniloom.processing.prompt import MediaPart, Message, TextPart, build_prompt

CAPTION_PROMPTS = (
    "Describe the image.",
    "What is in this picture?",
    "Describe this image briefly.",
)


@dataclass(frozen=True)
class Example:
    ids: list[int]  # a whole conversation: prompt, answers, end-of-turn tokens
    answer_spans: list[tuple[int, int]]  # [start, end) of each answer and its end-of-turn
    image: int  # row of the feature tensor


def image_item(sample: Sample, model: LoadedModel) -> ImageItem:
    buf = io.BytesIO()
    sample.image.save(buf, "PNG")
    decoded = decode_image(buf.getvalue(), Limits())
    return prepare_image(
        decoded, "low", ImageSettings(), model.tokens_per_tile, model.vlm.media_vocab
    )


def conversation(
    model: LoadedModel,
    item: ImageItem,
    turns: list[tuple[str, str]],
    image: int,
    image_first: bool,
) -> Example:
    """One image, then question–answer turns; each answer carries loss (LLaVA's multi-turn form)."""
    end = model.tokenizer.token_id("<|im_end|>")
    messages: list[Message] = []
    ids: list[int] = []
    spans = []
    for question, answer in turns:
        parts: list[TextPart | MediaPart] = [TextPart(question)]
        if not messages:
            parts = [MediaPart(item), *parts] if image_first else [*parts, MediaPart(item)]
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
    samples: list[Sample], model: LoadedModel, stage: str, seed: int = 0, longest: int = 8
) -> list[Example]:
    """``align``: one caption per image. ``instruct``: each image's questions plus a hard
    negative, shuffled, in conversations of 1 to ``longest`` turns (a caption request joins one
    in five images). Several turns per image put more answers in each step for little more
    compute: the image's 51 tokens are paid once."""
    rng = random.Random(seed)
    examples = []
    for row, sample in enumerate(samples):
        item = image_item(sample, model)
        caption = [(rng.choice(CAPTION_PROMPTS), sample.caption)]
        if stage == "align":
            groups = [caption]
        else:
            questions = sample.questions + hard_negative(sample, rng)
            turns = [(q.question, q.answer) for q in questions]
            turns += caption if rng.random() < 0.2 else []
            rng.shuffle(turns)
            groups = _chunks(turns, rng, longest)
        examples += [conversation(model, item, g, row, rng.random() < 0.5) for g in groups]
    return examples


@torch.inference_mode()
def encode_samples(samples: list[Sample], model: LoadedModel, batch: int = 32) -> torch.Tensor:
    """Encoder features (N, tiles·tokens, dim) for each sample's low-detail view."""
    feats = []
    for start in range(0, len(samples), batch):
        tiles = torch.cat([image_item(s, model).tiles() for s in samples[start : start + batch]])
        feats.append(model.vlm.encoder(tiles))
    return torch.cat(feats)
