"""``benchmarks/serving.py`` scaled down: rounds, medians, paired ratios."""

from __future__ import annotations

import argparse

import pytest

from tests.conftest import benchmark_module


def test_paired_ratio_is_the_median_of_same_round_ratios():
    serving = benchmark_module("serving")
    ours = serving.Server("ours", None, "", "")
    theirs = serving.Server("theirs", None, "", "")
    ours.runs = {16: [{"tok_per_s": t} for t in (100.0, 90.0, 120.0)]}
    theirs.runs = {16: [{"tok_per_s": t} for t in (200.0, 60.0, 100.0)]}
    assert serving.paired_ratios(ours, theirs) == {16: 1.2}  # of 0.5, 1.5 and 1.2


@pytest.mark.slow
def test_rounds_through_the_real_server_give_a_median_over_rounds():
    serving = benchmark_module("serving")
    args = argparse.Namespace(
        dtype="float32", llama_server=None, concurrency=[2], repeats=2, tokens=4
    )
    results, ratios = serving.measure(serving.start_servers(args), args)
    (row,) = results[0]["throughput"]
    assert row["streams"] == 2 and len(row["tok_per_s_runs"]) == 2
    assert row["tok_per_s"] > 0 and ratios == {}
    assert results[0]["ttft_s"]["same image again (hit)"] < results[0]["ttft_s"]["image (miss)"]
