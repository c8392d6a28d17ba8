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
from omniloom.eval.synthetic import Sample
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
    ids: list[int]  # prompt + answer + end-of-turn
    answer_start: int  # index of the first answer token
    image: int  # row of the feature tensor


def image_item(sample: Sample, model: LoadedModel) -> ImageItem:
    buf = io.BytesIO()
    sample.image.save(buf, "PNG")
    decoded = decode_image(buf.getvalue(), Limits())
    return prepare_image(
        decoded, "low", ImageSettings(), model.tokens_per_tile, model.vlm.media_vocab
    )


def _example(
    model: LoadedModel, item: ImageItem, question: str, answer: str, image: int, image_first: bool
) -> Example:
    parts = [MediaPart(item), TextPart(question)]
    prompt = build_prompt(
        [Message("user", parts if image_first else parts[::-1])], model.template, model.tokenizer
    )
    end = model.tokenizer.token_id("<|im_end|>")
    answer_ids = [*model.tokenizer.encode(answer), end]
    return Example(prompt.token_ids + answer_ids, len(prompt.token_ids), image)


def build_examples(
    samples: list[Sample], model: LoadedModel, stage: str, seed: int = 0
) -> list[Example]:
    """Stage ``align``: one caption per image; stage ``instruct``: every question, some captions."""
    rng = random.Random(seed)
    examples = []
    for row, sample in enumerate(samples):
        item = image_item(sample, model)
        pairs = [(rng.choice(CAPTION_PROMPTS), sample.caption)]
        if stage == "instruct":
            pairs = [(q.question, q.answer) for q in sample.questions] + (
                pairs if rng.random() < 0.2 else []
            )
        examples += [_example(model, item, q, a, row, rng.random() < 0.5) for q, a in pairs]
    return examples


@torch.inference_mode()
def encode_samples(samples: list[Sample], model: LoadedModel, batch: int = 32) -> torch.Tensor:
    """Encoder features (N, tiles·tokens, dim) for each sample's low-detail view."""
    feats = []
    for start in range(0, len(samples), batch):
        tiles = torch.cat([image_item(s, model).tiles() for s in samples[start : start + batch]])
        feats.append(model.vlm.encoder(tiles))
    return torch.cat(feats)
