"""Qwen2-VL and Qwen2.5-VL through their specs, against ``transformers`` on the same tiny
random checkpoint:
preprocessing and token counts, logits with 0, 1 and 3 images, 16 greedy tokens, and the
same outputs when it runs in the engine beside other requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omniloom.config import ImageSettings, Limits, VideoSettings
from omniloom.engine.engine import Engine
from omniloom.engine.sampling import SamplingParams
from omniloom.media import video
from omniloom.models.registry import load_model
from omniloom.processing.prompt import MediaPart, Message, TextPart, build_prompt
from tests.engine.test_scheduler import run_all
from tests.media.video_files import Scene, make_video
from tests.models.tiny_checkpoints import qwen2_vl
from tests.models.vlm_parity import (
    assert_greedy_in_engine,
    assert_logits_match,
    prepared,
    random_pictures,
)

SIZES = ((100, 150), (300, 90), (56, 56))  # (height, width): wide, tall, the minimum
QUESTION = "What is in this picture?"


def _pictures() -> list[Image.Image]:
    return random_pictures(SIZES)


@pytest.fixture(scope="module", params=["qwen2-vl", "qwen2.5-vl"])
def checkpoint(tmp_path_factory, request):
    directory = tmp_path_factory.mktemp(request.param.replace(".", "_"))
    reference, processor = qwen2_vl(directory, family=request.param)
    ours = load_model(weights=directory, dtype="float32")
    return reference, processor, ours


def _ours(model, pictures: list[Image.Image], detail: str | None = None):
    items = prepared(model, pictures, detail)
    parts = [MediaPart(items[0])] if items else []
    parts += [TextPart(QUESTION), *[MediaPart(i) for i in items[1:]]]
    return build_prompt([Message("user", parts)], model.template, model.tokenizer), items


def _reference_inputs(processor, pictures: list[Image.Image]):
    content = [{"type": "image"}] if pictures else []
    content += [{"type": "text", "text": QUESTION}]
    content += [{"type": "image"} for _ in pictures[1:]]
    messages = [{"role": "user", "content": content}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=pictures or None, return_tensors="pt")


def test_spec_is_chosen_from_the_checkpoint(checkpoint):
    reference, _, ours = checkpoint
    families = {"qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl"}
    assert ours.family == families[reference.config.model_type]
    assert ours.modalities == {"text", "image", "video"}  # video as timed frames
    assert ours.name.startswith(ours.family.replace(".", "_"))


def test_patches_and_token_counts_match_the_processor(checkpoint):
    _, processor, ours = checkpoint
    pictures = _pictures()
    prompt, items = _ours(ours, pictures)
    inputs = _reference_inputs(processor, pictures)
    assert prompt.token_ids == inputs["input_ids"][0].tolist()
    grids = [list(item.grid) for item in items]
    assert grids == inputs["image_grid_thw"].tolist()
    patches = torch.cat([item.patches() for item in items])
    torch.testing.assert_close(patches, inputs["pixel_values"].float(), atol=1e-5, rtol=0)


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


def test_low_detail_caps_the_pixels(checkpoint):
    _, _, ours = checkpoint
    big = Image.fromarray(np.zeros((900, 1200, 3), dtype=np.uint8))
    _, (high,) = _ours(ours, [big], "high")
    _, (low,) = _ours(ours, [big], "low")
    assert low.num_placeholders() <= 256 and low.num_placeholders() <= high.num_placeholders()


def test_video_frames_go_in_as_timed_image_spans(checkpoint):
    """Frames of a three-scene video through the family's image processor: each frame's span
    equals that frame as an image, its M-RoPE grid included, and the engine answers."""
    _, _, ours = checkpoint
    data = make_video([Scene((200, 0, 0), 1.0), Scene((0, 0, 200), 1.0)], size=(112, 84))
    info, frames = video.sample(data, VideoSettings(strategy="scene"), Limits())
    parts = ours.processors["video"].parts(info, frames, "v", "low", ImageSettings())
    prompt = build_prompt(
        [Message("user", [*parts, TextPart("Which colour?")])], ours.template, ours.tokenizer
    )
    spans = [s for s in prompt.spans if s.modality == "video"]
    assert [round(s.item.timestamp, 1) for s in spans] == [0.0, 1.0]
    as_image = ours.processors["image"].prepare(frames[1].decoded("v"), "low", ImageSettings())
    assert spans[1].length == len(as_image.token_ids()) and spans[1].item.grid == as_image.grid
    assert ours.vlm.prompt_positions(prompt).shape == (3, len(prompt.token_ids))
    engine = Engine(ours)
    try:
        (outcome,) = run_all(engine, [prompt], SamplingParams(max_tokens=4, temperature=0.0))
    finally:
        engine.shutdown()
    assert outcome.stats.prompt_tokens == len(prompt.token_ids)
