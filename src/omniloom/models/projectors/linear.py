"""One linear map per feature vector plus its cell's position (the original LLaVA projector)."""

from __future__ import annotations

import torch
from torch import nn

from omniloom.models.projectors.position import CellPosition


class LinearProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, cells: int):
        super().__init__()
        self.position = CellPosition(cells, in_dim)
        self.proj = nn.Linear(in_dim, out_dim)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return num_input_tokens

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self.position(features))
