"""A scaled-down overload run of ``benchmarks/load.py``: 4× capacity, nothing lost or hung."""

from __future__ import annotations

import importlib
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_overload_is_served_or_refused_never_lost():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        load = importlib.import_module("load")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    args = load.parser().parse_args(
        ["--duration", "15", "--probe-seconds", "8", "--probe-concurrency", "8",
         "--tokens", "16", "--request-timeout", "120"]
    )  # fmt: skip
    result = load.run(args)
    assert result["alive_after"] and result["healthy_after"]
    assert result["errors"] == 0 and result["hung"] == 0
    assert result["served"] + result["refused_429_503"] == result["requests"]
    assert result["refused_with_retry_after"] == result["refused_429_503"]
    assert result["served"] > 0
    assert result["rss_mb_max"] < 4096
