"""``benchmarks/weight_formats.py`` scaled down: every column measured for two formats."""

from __future__ import annotations

import json

import pytest

from tests.conftest import benchmark_module

pytestmark = pytest.mark.slow


def test_two_formats_side_by_side(tmp_path):
    bench = benchmark_module("weight_formats")
    out = tmp_path / "formats.json"
    small = ["--windows", "2", "--length", "32", "--continue-tokens", "4", "--tokens", "8"]
    result = bench.main(
        [
            "--formats",
            "float32",
            "int8",
            *small,
            "--repeats",
            "2",
            "--starts",
            "1",
            "--out",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == result
    fp32, int8 = result["formats"]["float32"], result["formats"]["int8"]
    assert fp32["top1_agreement"] == 100.0 and fp32["ratio"] == 1.0
    assert int8["top1_agreement"] > 80.0  # int8 follows fp32 closely on real prose
    assert abs(int8["next_token_accuracy"] - fp32["next_token_accuracy"]) < 10
    for row in (fp32, int8):
        assert len(row["tok_per_s_runs"]) == 2 and row["tok_per_s"] > 0
        assert row["later_start_s"] < row["first_start_s"]  # the cached conversion is mapped
