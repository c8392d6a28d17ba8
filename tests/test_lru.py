"""The shared LRU: weight-bounded eviction, and one computation for concurrent misses."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from omniloom.lru import LRU


def test_eviction_keeps_the_total_weight_within_capacity():
    cache: LRU[str] = LRU(capacity=6, weigh=len)
    cache.put("a", "xx")
    cache.put("b", "xx")
    cache.put("c", "xx")
    assert cache.get("a") == "xx"  # a becomes the newest
    cache.put("d", "xxx")  # weight 9 > 6: b then c go
    assert cache.get("b") is None and cache.get("c") is None
    assert (cache.get("a"), cache.get("d")) == ("xx", "xxx")
    assert cache.weight == 5 and len(cache) == 2
    cache.put("a", "x")  # replacing re-weighs
    assert cache.weight == 4
    cache.put("huge", "x" * 7)  # heavier than everything: not stored, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2


def test_concurrent_misses_on_one_key_compute_once():
    cache: LRU[int] = LRU(capacity=8)
    calls = []
    started = threading.Event()

    def slow() -> int:
        calls.append(1)
        started.set()
        time.sleep(0.2)  # the other callers arrive while this runs
        return 42

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(cache.get_or_compute, "k", slow)
        started.wait(5)
        rest = [pool.submit(cache.get_or_compute, "k", slow) for _ in range(3)]
        assert [f.result(5) for f in [first, *rest]] == [42] * 4
    assert len(calls) == 1
    assert cache.get_or_compute("k", slow) == 42 and len(calls) == 1


def test_a_failed_computation_reaches_its_waiters_and_is_not_stored():
    cache: LRU[int] = LRU(capacity=8)
    started, release = threading.Event(), threading.Event()

    def failing() -> int:
        started.set()
        release.wait(5)
        raise ValueError("unreadable")

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(cache.get_or_compute, "k", failing)
        started.wait(5)
        second = pool.submit(cache.get_or_compute, "k", lambda: 1)
        time.sleep(0.5)  # let the second caller find the pending computation
        release.set()
        for future in (first, second):
            with pytest.raises(ValueError, match="unreadable"):
                future.result(5)
    assert cache.get_or_compute("k", lambda: 7) == 7  # the next caller computes afresh
