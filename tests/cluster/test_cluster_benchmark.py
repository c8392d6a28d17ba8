"""``benchmarks/cluster.py`` scaled down: the single process against one cluster layout."""

from __future__ import annotations

import json

import pytest

from tests.conftest import benchmark_module

pytestmark = pytest.mark.slow


def test_single_against_a_cluster_with_a_projection(tmp_path):
    bench = benchmark_module("cluster")
    out = tmp_path / "cluster.json"
    small = [
        "--tokens",
        "4",
        "--repeats",
        "1",
        "--images",
        "2",
        "--asks",
        "2",
        "--concurrency",
        "1",
    ]
    result = bench.main(["--layouts", "single", "cluster 1+1+1", *small, "--out", str(out)])
    assert json.loads(out.read_text()) == result
    for row in result["layouts"].values():
        assert row["text"]["1"]["tok_per_s"] > 0 and row["text"]["16"]["tok_per_s"] > 0
        images = row["images"]
        assert images["requests"] == 4
        # one engine replica for media: every repeat of a picture finds its KV
        assert images["prefix_hit_rate"] == images["best_possible_hit_rate"] == 0.5
    projected = result["projection"]["projected_tok_per_s"]
    assert projected["8"] == pytest.approx(8 * projected["1"])
