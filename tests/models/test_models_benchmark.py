"""``benchmarks/models.py`` scaled down: both workers, each in its own process, on a tiny
Qwen2-VL; they agree on the image's token count and report rates and peak memory."""

from __future__ import annotations

import argparse

import pytest

from tests.conftest import benchmark_module
from tests.models.tiny_checkpoints import qwen2_vl

pytestmark = pytest.mark.slow


def test_both_workers_measure_the_same_checkpoint(tmp_path, capsys):
    models = benchmark_module("models")
    qwen2_vl(tmp_path, max_pixels=models.IMAGE_SIDE**2)
    args = argparse.Namespace(tokens=3, runs=1)
    results = {name: models.run_worker(name, tmp_path, args) for name in models.WORKERS}
    ours, theirs = results["omniloom"], results["transformers"]
    assert ours["image_tokens"] == theirs["image_tokens"] == 256  # 448² in 28² merged patches
    for result in results.values():
        assert set(result["decode_tok_per_s"]) == {str(s) for s in models.STREAMS}
        assert min(result["decode_tok_per_s"].values()) > 0
        assert result["encode_ms"] > 0 and result["peak_rss_mb"] > 100
    models.print_table({"tiny": results})
    assert "decode 16 stream(s) tok/s" in capsys.readouterr().out
