"""LLaVA-OneVision through its spec, against ``transformers`` on the same tiny random checkpoint:
the anyres views and token counts (grids shrunk past ``anyres_max_2`` and not), one padded view
per image when a prompt has several, prompt ids, logits with 0, 1 and 3 images, 16 greedy
tokens, and the same outputs in the engine beside other requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omniloom.config import EngineSettings, ImageSettings, Limits
from omniloom.engine.engine import Engine
from omniloom.engine.sampling import SamplingParams
from omniloom.media.image import decode_image
from omniloom.models.registry import load_model
from omniloom.processing.prompt import MediaPart, Message, TextPart, arrange_media, build_prompt
from tests.conftest import png_bytes
from tests.engine.test_scheduler import run_all
from tests.models.tiny_checkpoints import llava_onevision

# (height, width): wide (a 3×3 grid, shrunk), tall (3×1, shrunk), small (1×1), wide strip (1×2)
SIZES = ((100, 150), (300, 90), (20, 24), (30, 64))
QUESTION = "What is in this picture?"


def _pictures() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llava-onevision")
    reference, processor = llava_onevision(directory)
    ours = load_model(weights=directory, dtype="float32")
    return reference, processor, ours


def _ours(model, pictures: list[Image.Image], detail: str | None = None):
    items = [
        model.processors["image"].prepare(
            decode_image(png_bytes(np.asarray(p)), Limits()), detail, ImageSettings()
        )
        for p in pictures
    ]
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
    assert ours.modalities == {"text", "image"}
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
    net = ours.vlm
    embeds = net.embed_prompt(prompt, net.encode(items))
    with torch.inference_mode():
        logits = net.backbone(embeds[None], positions=net.prompt_positions(prompt))[0]
        expected = reference(**_reference_inputs(processor, pictures)).logits[0]
    torch.testing.assert_close(logits, expected.float(), atol=1e-5, rtol=1e-5)


def _reference_greedy(reference, processor, pictures, tokens: int) -> list[int]:
    inputs = _reference_inputs(processor, pictures)
    reference.generation_config.eos_token_id = None
    out = reference.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def test_greedy_tokens_in_the_engine_beside_other_requests(checkpoint):
    reference, processor, ours = checkpoint
    pictures = _pictures()
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, logprobs=0)
    engine = Engine(ours, EngineSettings(step_tokens=32, kv_cache_mb=8))
    try:
        prompts = [_ours(ours, pictures[:k])[0] for k in (1, 3, 0)]
        alone = [run_all(engine, [p], params)[0] for p in prompts]
        together = run_all(engine, prompts, params)
    finally:
        engine.shutdown()
    for k, solo, batched in zip((1, 3, 0), alone, together, strict=True):
        ids = [lp.token_id for lp in solo.logprobs]
        assert ids == _reference_greedy(reference, processor, pictures[:k], 16)
        assert [lp.token_id for lp in batched.logprobs] == ids
