"""LayerNorm, the cell's position, then a two-layer GELU MLP per feature vector (LLaVA-1.5's
projector, with the position a ViT encoder would have carried)."""

from __future__ import annotations

import torch
from torch import nn

from omniloom.models.projectors.position import CellPosition


class MLPProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, cells: int, hidden_dim: int | None = None):
        super().__init__()
        hidden = hidden_dim or out_dim
        self.norm = nn.LayerNorm(in_dim)
        self.position = CellPosition(cells, in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return num_input_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.position(self.norm(features))
        return self.fc2(nn.functional.gelu(self.fc1(x)))
