"""How much an image looks like the images the vision adapter was trained on.

The adapter learned to read the encoder's tokens from the project's synthetic images only; on a
photograph its tokens mean nothing to it, and it describes shapes that are not there. This is
the nearest-neighbour test of out-of-distribution detection (Sun et al., 2022): the encoder's
pooled ImageNet features, unit length, against a bank of the same features for training images
that ships inside the adapter. An image's familiarity is the cosine similarity to its k-th
nearest bank entry. The ``auto`` perception mode sends an image's tokens only when it is
familiar, and otherwise answers from the perception cascade's words alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from omniloom.processing.tiling import letterbox

BANK_KEY = "familiarity.bank"  # the tensor's name in the adapter file
NEIGHBOUR = 5  # the k of the k-th nearest neighbour: one odd training image cannot vouch alone


def whole_image_tile(image: Image.Image, tile_size: int) -> torch.Tensor:
    """The image letterboxed onto one square tile, uint8 (1, 3, S, S): what the classifier and
    the familiarity test look at."""
    tile = np.array(letterbox(image, tile_size), dtype=np.uint8)  # writable for from_numpy
    return torch.from_numpy(tile).permute(2, 0, 1)[None]


def unit(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=-1)


def build_bank(encoder, images: Sequence[Image.Image], batch: int = 32) -> torch.Tensor:
    """Unit-length pooled features (N, D) of ``images``, stored as float16 (the adapter file)."""
    rows = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        tiles = torch.cat([whole_image_tile(i, encoder.tile_size) for i in chunk])
        rows.append(unit(encoder.look(tiles)[0]))
    return torch.cat(rows).half()


@dataclass(frozen=True)
class Familiarity:
    """The bank of training-image features and the similarity at which an image counts as
    familiar (``Settings.familiar_threshold``)."""

    bank: torch.Tensor  # (N, D) unit rows
    threshold: float

    def similarity(self, pooled: torch.Tensor) -> float:
        """Cosine similarity of one image's pooled features (D,) to its k-th nearest bank row."""
        sims = self.bank.float() @ unit(pooled)
        return float(sims.topk(min(NEIGHBOUR, len(sims))).values[-1])

    def familiar(self, similarity: float) -> bool:
        return similarity >= self.threshold
