"""Idefics3 and SmolVLM through their spec, against ``transformers`` on the same tiny random
checkpoint: views, token counts and prompt ids (list-content chat template), logits with 0, 1
and 3 images, 16 greedy tokens, and the same outputs in the engine beside other requests."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers.processing_utils import ProcessorMixin

from omniloom.errors import InvalidRequest
from omniloom.models.registry import load_model
from omniloom.processing.prompt import MediaPart, Message, TextPart, build_prompt
from tests.models.tiny_checkpoints import idefics3
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


@pytest.fixture(scope="module", params=["idefics3", "smolvlm"])
def checkpoint(tmp_path_factory, request):
    directory = tmp_path_factory.mktemp(request.param)
    reference, processor = idefics3(directory, family=request.param)
    ours = load_model(weights=directory, dtype="float32")
    return reference, processor, ours


def _ours(model, pictures: list[Image.Image], detail: str | None = None, question=QUESTION):
    items = prepared(model, pictures, detail)
    parts = [MediaPart(items[0])] if items else []
    parts += [TextPart(question), *[MediaPart(i) for i in items[1:]]]
    return build_prompt([Message("user", parts)], model.template, model.tokenizer), items


def _reference_inputs(processor, pictures: list[Image.Image], **kwargs):
    content = [{"type": "image"}] if pictures else []
    content += [{"type": "text", "text": QUESTION}]
    content += [{"type": "image"} for _ in pictures[1:]]
    messages = [{"role": "user", "content": content}]
    # SmolVLM's override only adds its video processor's defaults (torchvision, not installed)
    render = ProcessorMixin.apply_chat_template
    text = render(processor, messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=pictures or None, return_tensors="pt", **kwargs)


def test_spec_is_chosen_from_the_checkpoint(checkpoint):
    reference, _, ours = checkpoint
    assert ours.family == reference.config.model_type
    assert ours.modalities == {"text", "image", "video"}  # video as timed frames
    assert ours.template.content_format == "list"


@pytest.mark.parametrize("detail", [None, "low"])
def test_views_and_token_counts_match_the_processor(checkpoint, detail):
    _, processor, ours = checkpoint
    pictures = _pictures()
    prompt, items = _ours(ours, pictures, detail)
    splitting = {"do_image_splitting": False} if detail == "low" else {}
    inputs = _reference_inputs(processor, pictures, **splitting)
    assert prompt.token_ids == inputs["input_ids"][0].tolist()
    views = torch.cat([item.views() for item in items])
    expected = inputs["pixel_values"][0][: views.shape[0]]
    torch.testing.assert_close(views, expected.float(), atol=1e-5, rtol=0)
    assert [item.layout.views for item in items] == ([1, 1, 1] if detail else [7, 4, 10])


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


def test_text_that_spells_the_image_marker_is_refused(checkpoint):
    _, _, ours = checkpoint
    with pytest.raises(InvalidRequest, match="<image>"):
        _ours(ours, _pictures()[:1], question="what is <image> here?")
