"""``benchmarks/models.py`` scaled down: both workers, each in its own process, on a tiny
Qwen2-VL and a tiny SmolVLM; they agree on the prompt's and the image's token counts and
report rates and peak memory."""

from __future__ import annotations

import argparse

import pytest

from tests.conftest import benchmark_module
from tests.models.tiny_checkpoints import idefics3, qwen2_vl

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("write", "image_tokens"),
    [
        (lambda d, side: qwen2_vl(d, max_pixels=side**2), 256),  # 448² in 28² merged patches
        (lambda d, side: idefics3(d, family="smolvlm"), 10 * 4),  # 3×3 tiles and the global view
    ],
    ids=["qwen2-vl", "smolvlm"],
)
def test_both_workers_measure_the_same_checkpoint(tmp_path, capsys, write, image_tokens):
    models = benchmark_module("models")
    write(tmp_path, models.IMAGE_SIDE)
    args = argparse.Namespace(tokens=8, runs=3)
    results = {name: models.run_worker(name, tmp_path, args) for name in models.WORKERS}
    ours, theirs = results["omniloom"], results["transformers"]
    assert ours["image_tokens"] == theirs["image_tokens"] == image_tokens
    assert ours["prompt_tokens"] == theirs["prompt_tokens"]
    for result in results.values():
        assert set(result["decode_tok_per_s"]) == {str(s) for s in models.STREAMS}
        assert min(result["decode_tok_per_s"].values()) > 0
        assert result["encode_ms"] > 0 and result["peak_rss_mb"] > 100
    models.print_table({"tiny": results})
    assert "decode 16 stream(s) tok/s" in capsys.readouterr().out
