"""What every vision family's parity test checks against ``transformers``: each family's test
says how it builds our prompt and the reference's inputs for its first k pictures."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from omniloom.config import EngineSettings, ImageSettings, Limits
from omniloom.engine.engine import Engine
from omniloom.engine.sampling import SamplingParams
from omniloom.media.image import decode_image
from tests.conftest import png_bytes
from tests.engine.test_scheduler import run_all

GREEDY_TOKENS = 16


def random_pictures(sizes: tuple[tuple[int, int], ...]) -> list[Image.Image]:
    """Random RGB pictures of the given (height, width) sizes, the same every run."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]


def prepared(model, pictures: list[Image.Image], detail: str | None = None) -> list:
    """The pictures as the model's image processor prepares them from PNG uploads."""
    return [
        model.processors["image"].prepare(
            decode_image(png_bytes(np.asarray(p)), Limits()), detail, ImageSettings()
        )
        for p in pictures
    ]


def assert_logits_match(model, prompt, items, reference, inputs) -> None:
    """Our logits over the whole prompt equal the reference model's on its own inputs."""
    net = model.vlm
    embeds = net.embed_prompt(prompt, net.encode(items))
    with torch.inference_mode():
        logits = net.backbone(embeds[None], positions=net.prompt_positions(prompt))[0]
        expected = reference(**inputs).logits[0]
    torch.testing.assert_close(logits, expected.float(), atol=1e-5, rtol=1e-5)


def _reference_greedy(reference, inputs) -> list[int]:
    reference.generation_config.eos_token_id = None
    out = reference.generate(**inputs, max_new_tokens=GREEDY_TOKENS, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def assert_greedy_in_engine(
    model, reference, prompt_for: Callable[[int], object], inputs_for: Callable[[int], dict]
) -> None:
    """Greedy tokens with 1, 3 and 0 pictures in the engine, each alone and all three batched,
    equal the reference's ``generate``; the engine counts the prompt as built."""
    params = SamplingParams(max_tokens=GREEDY_TOKENS, temperature=0.0, ignore_eos=True, logprobs=0)
    counts = (1, 3, 0)
    engine = Engine(model, EngineSettings(step_tokens=32, kv_cache_mb=8))
    try:
        prompts = [prompt_for(k) for k in counts]
        alone = [run_all(engine, [p], params)[0] for p in prompts]
        together = run_all(engine, prompts, params)
    finally:
        engine.shutdown()
    for k, prompt, solo, batched in zip(counts, prompts, alone, together, strict=True):
        ids = [lp.token_id for lp in solo.logprobs]
        assert ids == _reference_greedy(reference, inputs_for(k))
        assert [lp.token_id for lp in batched.logprobs] == ids
        assert solo.stats.prompt_tokens == len(prompt.token_ids)
