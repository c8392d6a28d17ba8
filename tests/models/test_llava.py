"""LLaVA through its spec, against ``transformers`` on the same tiny random checkpoint: pixels,
token counts and prompt ids (the tokenizer's BOS before a template that writes none), logits
with 0, 1 and 3 images, 16 greedy tokens, and the same outputs in the engine beside other
requests. Two variants: LLaVA-1.5's choices, and padded images with two feature layers and
the class position kept."""

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
from omniloom.processing.prompt import MediaPart, Message, TextPart, build_prompt
from tests.conftest import png_bytes
from tests.engine.test_scheduler import run_all
from tests.models.tiny_checkpoints import llava

SIZES = ((100, 150), (300, 90), (20, 24))  # (height, width): wide, tall, small (scaled up)
QUESTION = "What is in this picture?"


def _pictures() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]


@pytest.fixture(scope="module", params=["1.5", "padded"])
def checkpoint(tmp_path_factory, request):
    directory = tmp_path_factory.mktemp(f"llava-{request.param}")
    reference, processor = llava(directory, variant=request.param)
    ours = load_model(weights=directory, dtype="float32")
    return reference, processor, ours


def _ours(model, pictures: list[Image.Image], detail: str | None = None):
    items = [
        model.processors["image"].prepare(
            decode_image(png_bytes(np.asarray(p)), Limits()), detail, ImageSettings()
        )
        for p in pictures
    ]
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
    assert ours.modalities == {"text", "image"}
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
