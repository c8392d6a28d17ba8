"""Qwen2-VL and Qwen2.5-VL through their specs, against ``transformers`` on the same tiny
random checkpoint:
preprocessing and token counts, logits with 0, 1 and 3 images, 16 greedy tokens, and the
same outputs when it runs in the engine beside other requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omniloom.config import Limits, VideoSettings
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


def _video(ours, count: int = 5):
    """``count`` frames spread over a three-second, three-scene video through the family's
    video path."""
    scenes = [Scene((200, 0, 0), 1.0), Scene((0, 0, 200), 1.0), Scene((0, 160, 0), 1.0)]
    data = make_video(scenes, size=(112, 84))
    sampling = VideoSettings(fps=2.0, max_frames=count)
    info, frames = video.sample(data, sampling, Limits())
    header, *parts = ours.processors["video"].parts(info, frames, "v", "high")
    messages = [Message("user", [header, *parts, TextPart(QUESTION)])]
    return build_prompt(messages, ours.template, ours.tokenizer), frames, header.text


def _reference_video_inputs(reference, processor, prompt, header: str):
    """The reference's inputs for our video prompt: its chat template with a video part and
    ``<|video_pad|>`` repeated for the grid, as ``transformers``' processor writes them
    (Qwen2.5-VL's with the seconds each frame pair spans)."""
    (span,) = prompt.spans
    content = [{"type": "text", "text": header}, {"type": "video"}]
    content += [{"type": "text", "text": "\n"}, {"type": "text", "text": QUESTION}]
    text = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    text = text.replace("<|video_pad|>", "<|video_pad|>" * span.item.num_placeholders())
    ids = processor.tokenizer(text, return_tensors="pt")["input_ids"]
    pad = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": (ids == pad).int() * 2,
        "pixel_values_videos": span.item.patches(),
        "video_grid_thw": torch.tensor([span.item.grid]),
    }
    if reference.config.model_type == "qwen2_5_vl":
        inputs["second_per_grid_ts"] = torch.tensor([span.item.seconds_per_grid])
    return inputs


def test_video_is_one_span_of_frame_pairs_after_its_timestamps(checkpoint):
    reference, processor, ours = checkpoint
    prompt, frames, header = _video(ours)
    (span,) = prompt.spans
    assert [round(f.timestamp, 1) for f in frames] == [0.0, 0.6, 1.2, 1.8, 2.4]
    assert "5 frames at 0.0, 0.6, 1.2, 1.8, 2.4 s:" in ours.tokenizer.decode(prompt.token_ids)
    assert span.modality == "video" and span.item.grid == (3, 6, 8)  # 5 frames → 3 pairs
    assert span.length == 2 + 3 * 6 * 8 // 4
    assert (
        prompt.token_ids
        == _reference_video_inputs(reference, processor, prompt, header)["input_ids"][0].tolist()
    )


def test_video_patches_follow_transformers_layout(checkpoint):
    """Each frame pair's patches hold its two frames' patches as the reference image
    processor cuts them (the fifth frame repeats to fill the last pair)."""
    _, processor, ours = checkpoint
    prompt, frames, _ = _video(ours)
    item = prompt.spans[0].item
    per_frame = item.grid[1] * item.grid[2]
    ours_by_pair = item.patches().reshape(3, per_frame, 3, 2, 14, 14)
    images = processor.image_processor(
        images=[f.image for f in frames], return_tensors="pt", do_resize=False
    )["pixel_values"].reshape(5, per_frame, 3, 2, 14, 14)
    for k in range(6):
        expected = images[min(k, 4), :, :, 0]
        torch.testing.assert_close(ours_by_pair[k // 2, :, :, k % 2], expected, atol=1e-6, rtol=0)


def test_video_logits_match_transformers(checkpoint):
    """Logits over a prompt with a video, M-RoPE time positions included (Qwen2.5-VL's scaled
    by ``tokens_per_second`` × the seconds a frame pair spans)."""
    reference, processor, ours = checkpoint
    prompt, _, header = _video(ours)
    item = prompt.spans[0].item
    inputs = _reference_video_inputs(reference, processor, prompt, header)
    pads = prompt.spans[0].start + 1
    times = ours.vlm.prompt_positions(prompt)[0, pads : pads + item.num_placeholders()].unique()
    step = ours.vlm.visual.cfg.tokens_per_second * item.seconds_per_grid or 1
    assert item.seconds_per_grid == pytest.approx(1.2)
    assert (times - times[0]).tolist() == [int(k * step + 1e-6) for k in range(3)]
    assert_logits_match(ours, prompt, [item], reference, inputs)


def test_video_greedy_tokens_in_the_engine(checkpoint):
    reference, processor, ours = checkpoint
    prompt, _, header = _video(ours, count=4)
    inputs = _reference_video_inputs(reference, processor, prompt, header)
    reference.generation_config.eos_token_id = None
    expected = reference.generate(**inputs, max_new_tokens=8, do_sample=False)
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=0)
    engine = Engine(ours)
    try:
        (outcome,) = run_all(engine, [prompt], params)
    finally:
        engine.shutdown()
    assert [lp.token_id for lp in outcome.logprobs] == expected[0, len(prompt.token_ids) :].tolist()
    assert outcome.stats.prompt_tokens == len(prompt.token_ids)
