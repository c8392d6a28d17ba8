"""LLaVA-OneVision through its spec, against ``transformers`` on the same tiny random checkpoint:
the anyres views and token counts (grids shrunk past ``anyres_max_2`` and not), one padded view
per image when a prompt has several, prompt ids, logits with 0, 1 and 3 images, 16 greedy
tokens, and the same outputs in the engine beside other requests."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from omniloom.models.registry import load_model
from omniloom.processing.prompt import MediaPart, Message, TextPart, arrange_media, build_prompt
from tests.models.tiny_checkpoints import llava_onevision
from tests.models.vlm_parity import (
    assert_greedy_in_engine,
    assert_logits_match,
    prepared,
    random_pictures,
)

# (height, width): wide (a 3×3 grid, shrunk), tall (3×1, shrunk), small (1×1), wide strip (1×2)
SIZES = ((100, 150), (300, 90), (20, 24), (30, 64))
QUESTION = "What is in this picture?"


def _pictures() -> list[Image.Image]:
    return random_pictures(SIZES)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llava-onevision")
    reference, processor = llava_onevision(directory)
    ours = load_model(weights=directory, dtype="float32")
    return reference, processor, ours


def _ours(model, pictures: list[Image.Image], detail: str | None = None):
    items = prepared(model, pictures, detail)
    parts = [MediaPart(i) for i in items] + [TextPart(QUESTION)]
    messages = arrange_media([Message("user", parts)], model.processors)
    prompt = build_prompt(messages, model.template, model.tokenizer)
    return prompt, [span.item for span in prompt.spans]


def _reference_inputs(processor, pictures: list[Image.Image]):
    content = [{"type": "image"} for _ in pictures] + [{"type": "text", "text": QUESTION}]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images = [pictures] if pictures else None  # one sample: its images together
    return processor(text=[text], images=images, return_tensors="pt")


def test_spec_is_chosen_from_the_checkpoint(checkpoint):
    _, _, ours = checkpoint
    assert ours.family == "llava-onevision"
    assert ours.modalities == {"text", "image", "video"}  # video as timed frames
    assert ours.template.content_format == "list"


@pytest.mark.parametrize("count", [1, 4], ids=["one image (anyres)", "four (one view each)"])
@pytest.mark.parametrize("index", range(len(SIZES)))
def test_views_and_token_counts_match_the_processor(checkpoint, count, index):
    _, processor, ours = checkpoint
    pictures = (_pictures()[index:] + _pictures()[:index])[:count]
    prompt, items = _ours(ours, pictures)
    inputs = _reference_inputs(processor, pictures)
    ids = inputs["input_ids"][0].tolist()
    assert prompt.token_ids == ids
    views = items[0].views()
    torch.testing.assert_close(
        views, inputs["pixel_values"][0][: views.shape[0]].float(), atol=1e-5, rtol=0
    )
    if count == 1:
        assert items[0].layout.grid == {0: (3, 3), 1: (3, 1), 2: (1, 1), 3: (1, 2)}[index]
        assert (items[0].layout.shrunk is not None) == (index in (0, 1))
    else:
        assert prompt.tokens_by_modality()["image"] == count * (16 + 1)


def test_low_detail_is_the_single_view_a_shared_prompt_gets(checkpoint):
    _, _, ours = checkpoint
    picture = _pictures()[0]
    (low,) = _ours(ours, [picture], detail="low")[1]
    shared = _ours(ours, [picture, picture])[1][0]
    assert low.num_placeholders() == shared.num_placeholders() == 17
    torch.testing.assert_close(low.views(), shared.views(), atol=0, rtol=0)


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
