"""Pixel arithmetic every family's image processor shares, in ``transformers``' float32 order."""

from __future__ import annotations

import numpy as np
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
    return (pixels - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[
        :, None, None
    ]


def padded_to_square(image: Image.Image, mean: tuple[float, ...]) -> Image.Image:
    """The image centred on a square of its longer side, filled with the mean colour."""
    if image.width == image.height:
        return image
    side = max(image.size)
    square = Image.new("RGB", (side, side), tuple(int(m * 255) for m in mean))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return square
