"""Layers that can be built on the meta device cheaply, to be filled by a checkpoint.

PyTorch initialises a meta tensor through its Python reference ops, and ``normal_`` there
imports ``torch._dynamo`` (about a second of every start-up). An embedding table built here is
random only off meta, with the same draws as ``nn.Embedding``'s own initialisation.
"""

from __future__ import annotations

import torch
from torch import nn


def embedding(num: int, dim: int) -> nn.Embedding:
    table = torch.empty(num, dim)
    if not table.is_meta:
        nn.init.normal_(table)
    return nn.Embedding(num, dim, _weight=table)
