"""Pixel arithmetic every family's image processor shares, in ``transformers``' float32 order."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalised(
    image: Image.Image,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    rescale_factor: float = 1 / 255,
) -> np.ndarray:
    """(C, H, W) float32: scaled by ``rescale_factor``, then ``(x - mean) / std`` per channel."""
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
    pixels = pixels * np.float32(rescale_factor)
    mean_ = np.asarray(mean, np.float32)[:, None, None]
    std_ = np.asarray(std, np.float32)[:, None, None]
    return (pixels - mean_) / std_


def normalised_views(views: list[Image.Image], settings) -> torch.Tensor:
    """(views, C, H, W) float32: each view ``normalised`` with ``settings``' ``image_mean``,
    ``image_std`` and ``rescale_factor``."""
    s = settings
    return torch.from_numpy(
        np.stack([normalised(v, s.image_mean, s.image_std, s.rescale_factor) for v in views])
    )


def padded_to_square(image: Image.Image, mean: tuple[float, ...]) -> Image.Image:
    """The image centred on a square of its longer side, filled with the mean colour."""
    if image.width == image.height:
        return image
    side = max(image.size)
    square = Image.new("RGB", (side, side), tuple(int(m * 255) for m in mean))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square
