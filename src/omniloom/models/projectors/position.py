"""Where each encoder cell sits: a learned vector per cell of a tile's grid, added to its features.

A CNN's features say what is in a cell, hardly where the cell is: probing the per-cell projector
trained without this table, the token at an object's centre was nearest to the words for the
object's true place (of nine) 11% of the time, chance. ViT encoders add position embeddings
inside; EfficientNet has none, so the projector adds them (each tile of a high-detail image
shares the same table: positions are within the tile).
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
