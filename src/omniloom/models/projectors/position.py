"""Where each encoder cell sits: a learned vector per cell of a tile's grid, added to its features.

A CNN's features say what is in a cell, hardly where the cell is. ViT encoders add position
embeddings inside; EfficientNet has none, so the projector adds them (each tile of a high-detail
image shares the same table: positions are within the tile). Probing the token at an object's
centre against the words for the object at each of nine places, right after the grounding stage:
69% nearest the true place without the table, 78% with it (``docs/training.md``, Known limits,
has what the later stages do to it).
"""

from __future__ import annotations

import torch
from torch import nn


class CellPosition(nn.Module):
    def __init__(self, cells: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(cells, dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-2] != self.table.shape[0]:
            raise ValueError(
                f"{features.shape[-2]} feature cells per tile; the projector was built for "
                f"{self.table.shape[0]}"
            )
        return features + self.table.to(features.dtype)
