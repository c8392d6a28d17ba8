"""A Perceiver-style resampler: a fixed set of learned queries cross-attends to the features.

It turns any number of feature vectors per tile into ``num_queries`` tokens (Flamingo/Qwen-VL),
so the token count per tile is set by the projector, not the encoder. The keys carry each
cell's position, so the queries can tell where a feature came from.
"""

from __future__ import annotations

import torch
from torch import nn

from omniloom.models.projectors.position import CellPosition


class PerceiverResampler(nn.Module):
    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        cells: int,
        num_queries: int = 16,
        num_heads: int = 8,
        depth: int = 1,
    ):
        super().__init__()
        self.num_queries = num_queries
        self.queries = nn.Parameter(torch.randn(num_queries, out_dim) * 0.02)
        self.kv_proj = nn.Linear(in_dim, out_dim)
        self.position = CellPosition(cells, out_dim)
        self.blocks = nn.ModuleList(_ResamplerBlock(out_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(out_dim)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return self.num_queries

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        kv = self.position(self.kv_proj(features))
        x = self.queries.unsqueeze(0).expand(features.shape[0], -1, -1)
        for block in self.blocks:
            x = block(x, kv)
        return self.norm(x)


class _ResamplerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.ffn = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        )

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        kv_n = self.norm_kv(kv)
        x = x + self.attn(self.norm_q(x), kv_n, kv_n, need_weights=False)[0]
        return x + self.ffn(x)
