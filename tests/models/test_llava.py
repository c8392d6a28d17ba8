"""LLaVA through its spec, against ``transformers`` on the same tiny random checkpoint: pixels,
token counts and prompt ids (the tokenizer's BOS before a template that writes none), logits
with 0, 1 and 3 images, 16 greedy tokens, and the same outputs in the engine beside other
requests. Two variants: LLaVA-1.5's choices, and padded images with two feature layers and
the class position kept."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from omniloom.models.registry import load_model
from omniloom.processing.prompt import MediaPart, Message, TextPart, build_prompt
from tests.models.tiny_checkpoints import llava
from tests.models.vlm_parity import (
    assert_greedy_in_engine,
    assert_logits_match,
    prepared,
    random_pictures,
)

SIZES = ((100, 150), (300, 90), (20, 24))  # (height, width): wide, tall, small (scaled up)
QUESTION = "What is in this picture?"


def _pictures() -> list[Image.Image]:
    return random_pictures(SIZES)


@pytest.fixture(scope="module", params=["1.5", "padded"])
def checkpoint(tmp_path_factory, request):
    directory = tmp_path_factory.mktemp(f"llava-{request.param}")
    reference, processor = llava(directory, variant=request.param)
    ours = load_model(weights=directory, dtype="float32")
    return reference, processor, ours


def _ours(model, pictures: list[Image.Image], detail: str | None = None):
    items = prepared(model, pictures, detail)
    parts = [MediaPart(items[0])] if items else []
    parts += [TextPart(QUESTION), *[MediaPart(i) for i in items[1:]]]
    return build_prompt([Message("user", parts)], model.template, model.tokenizer), items


def _reference_inputs(processor, pictures: list[Image.Image]):
    content = [{"type": "image"} for _ in pictures] + [{"type": "text", "text": QUESTION}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=pictures or None, return_tensors="pt")


def test_spec_is_chosen_from_the_checkpoint(checkpoint):
    _, processor, ours = checkpoint
    assert ours.family == "llava"
    assert ours.modalities == {"text", "image", "video"}  # video as timed frames
    assert ours.template.content_format == "list"
    assert ours.template.prompt_prefix == (processor.tokenizer.bos_token_id,)


@pytest.mark.parametrize("detail", [None, "low", "high"])
def test_pixels_and_token_counts_match_the_processor(checkpoint, detail):
    reference, processor, ours = checkpoint
    pictures = _pictures()
    prompt, items = _ours(ours, pictures, detail)
    inputs = _reference_inputs(processor, pictures)
    ids = inputs["input_ids"][0].tolist()
    assert prompt.token_ids == ids
    assert ids[0] == processor.tokenizer.bos_token_id
    pixels = torch.stack([item.pixels() for item in items])
    torch.testing.assert_close(pixels, inputs["pixel_values"].float(), atol=1e-5, rtol=0)
    image_tokens = ids.count(reference.config.image_token_id)
    assert prompt.tokens_by_modality()["image"] == image_tokens
    patches = 16 + (reference.config.vision_feature_select_strategy == "full")
    assert image_tokens == 3 * patches


@pytest.mark.parametrize("count", [0, 1, 3])
def test_logits_match_transformers(checkpoint, count):
    reference, processor, ours = checkpoint
    pictures = _pictures()[:count]
    prompt, items = _ours(ours, pictures)
    assert_logits_match(ours, prompt, items, reference, _reference_inputs(processor, pictures))


def test_greedy_tokens_in_the_engine_beside_other_requests(checkpoint):
    reference, processor, ours = checkpoint
    pictures = _pictures()
    assert_greedy_in_engine(
        ours,
        reference,
        lambda k: _ours(ours, pictures[:k])[0],
        lambda k: _reference_inputs(processor, pictures[:k]),
    )
