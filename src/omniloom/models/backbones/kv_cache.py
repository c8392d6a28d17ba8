"""Key/value caches as the decoder sees them, and the dense one for lockstep batches.

The decoder asks a cache for the absolute positions of the tokens it is about to run and hands
it each layer's new keys and values to store and attend over (``KVCache``). ``StaticKVCache``
is the simple dense form, all rows one length: parity tests and benchmarks against
``transformers`` use it. The serving engine uses the paged cache in ``paged_kv``.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


class KVCache(Protocol):
    def positions(self, num_tokens: int) -> torch.Tensor: ...

    def attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        window: int | None = None,
    ) -> torch.Tensor: ...

    def advance(self, num_tokens: int) -> None: ...


def causal_mask(
    q_len: int, kv_len: int, device: torch.device, window: int | None = None
) -> torch.Tensor | None:
    """Boolean mask letting query i (at absolute kv_len - q_len + i) see keys up to itself, and
    with a sliding ``window`` only the last ``window`` of them (itself included)."""
    if q_len == 1 and (window is None or kv_len <= window):
        return None
    rows = torch.arange(q_len, device=device)[:, None] + (kv_len - q_len)
    keys = torch.arange(kv_len, device=device)[None, :]
    mask = keys <= rows
    return mask & (keys > rows - window) if window else mask


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

    def advance(self, num_tokens: int) -> None:
        self.length += num_tokens

    def positions(self, num_tokens: int) -> torch.Tensor:
        return torch.arange(self.length, self.length + num_tokens)

    def attend(self, layer: int, q, k, v, window: int | None = None) -> torch.Tensor:
        k, v = self.append(layer, k, v)
        mask = causal_mask(q.shape[2], k.shape[2], q.device, window)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def expand(self, batch: int) -> StaticKVCache:
        """Copy a one-row cache (a prefilled prompt) into ``batch`` rows for parallel sampling."""
        if self.batch != 1:
            raise ValueError("only a single-row cache can be expanded")
        out = StaticKVCache.__new__(StaticKVCache)
        out.keys = self.keys.expand(-1, batch, -1, -1, -1).contiguous()
        out.values = self.values.expand(-1, batch, -1, -1, -1).contiguous()
        out.length, out.max_len = self.length, self.max_len
        return out
