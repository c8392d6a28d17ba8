"""A preallocated key/value cache for one batch of sequences that advance in lockstep.

All rows share one length, which is what a single request (with ``n`` choices sharing its
prompt) needs. The paged, block-table cache for continuous batching replaces this in the engine.
"""

from __future__ import annotations

import torch


class StaticKVCache:
    def __init__(
        self,
        num_layers: int,
        batch: int,
        num_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ):
        shape = (num_layers, batch, num_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0
        self.max_len = max_len

    @property
    def batch(self) -> int:
        return self.keys.shape[1]

    def append(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values at the current length; return everything so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} > {self.max_len}")
        self.keys[layer, :, :, start:end] = k
        self.values[layer, :, :, start:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def expand(self, batch: int) -> StaticKVCache:
        """Copy a one-row cache (a prefilled prompt) into ``batch`` rows for parallel sampling."""
        if self.batch != 1:
            raise ValueError("only a single-row cache can be expanded")
        out = StaticKVCache.__new__(StaticKVCache)
        out.keys = self.keys.expand(-1, batch, -1, -1, -1).contiguous()
        out.values = self.values.expand(-1, batch, -1, -1, -1).contiguous()
        out.length, out.max_len = self.length, self.max_len
        return out
