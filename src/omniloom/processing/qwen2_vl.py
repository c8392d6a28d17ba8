"""Qwen2-VL's image preprocessing: native resolution, resized to a multiple of 28 pixels.

As ``transformers``' Qwen2-VL image processor (its PIL backend) does it: the image is resized
(bicubic) so that each side is a multiple of patch × merge (28) and the pixel count lies in
[``min_pixels``, ``max_pixels``], scaled to [0, 1], normalised with CLIP's mean and standard
deviation, and cut into 14×14 patches ordered by 2×2 merge block, each repeated over the
temporal patch of 2. Every 2×2 block becomes one ``<|image_pad|>`` token between
``<|vision_start|>`` and ``<|vision_end|>``, so the token count follows from the image's size
alone, before any pixel is decoded. ``detail: low`` caps the pixels at 256 tokens' worth.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omniloom.errors import MediaError
from omniloom.media.image import DecodedImage
from omniloom.processing.pixels import CLIP_MEAN, CLIP_STD, normalised

LOW_DETAIL_TOKENS = 256


@dataclass(frozen=True)
class Qwen2VLImageSettings:
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD

    @classmethod
    def from_directory(cls, directory: Path) -> Qwen2VLImageSettings:
        """The checkpoint's ``preprocessor_config.json`` (its defaults where there is none)."""
        path = directory / "preprocessor_config.json"
        cfg = json.loads(path.read_text()) if path.exists() else {}
        size = cfg.get("size") or {}
        base = cls()
        return cls(
            min_pixels=cfg.get("min_pixels") or size.get("shortest_edge") or base.min_pixels,
            max_pixels=cfg.get("max_pixels") or size.get("longest_edge") or base.max_pixels,
            patch_size=cfg.get("patch_size", base.patch_size),
            merge_size=cfg.get("merge_size", base.merge_size),
            temporal_patch_size=cfg.get("temporal_patch_size", base.temporal_patch_size),
            image_mean=tuple(cfg.get("image_mean", base.image_mean)),
            image_std=tuple(cfg.get("image_std", base.image_std)),
        )

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def for_detail(self, detail: str | None) -> Qwen2VLImageSettings:
        if detail != "low":
            return self
        low = LOW_DETAIL_TOKENS * self.factor**2
        return replace(self, max_pixels=min(self.max_pixels, low), min_pixels=self.min_pixels)


def smart_resize(height: int, width: int, s: Qwen2VLImageSettings) -> tuple[int, int]:
    """The resized (height, width): multiples of ``factor``, pixels within the bounds."""
    if max(height, width) / min(height, width) > 200:
        raise MediaError(
            f"The image is {width}x{height}; this model takes aspect ratios up to 200:1.",
            param="image_url",
        )
    factor = s.factor
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > s.max_pixels:
        beta = math.sqrt((height * width) / s.max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < s.min_pixels:
        beta = math.sqrt(s.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class Qwen2VLTokens:
    """The checkpoint's ids for an image's span."""

    vision_start: int
    vision_end: int
    image_pad: int


@dataclass(frozen=True)
class Qwen2VLImage:
    decoded: DecodedImage
    settings: Qwen2VLImageSettings
    tokens: Qwen2VLTokens
    size: tuple[int, int]  # resized (height, width)
    modality: str = "image"

    @property
    def content_hash(self) -> str:
        return self.decoded.content_hash

    @property
    def grid(self) -> tuple[int, int, int]:
        """Patches along (time, height, width) before merging."""
        p = self.settings.patch_size
        return 1, self.size[0] // p, self.size[1] // p

    def num_placeholders(self) -> int:
        t, h, w = self.grid
        return t * h * w // self.settings.merge_size**2

    def cache_key(self) -> str:
        s = self.settings
        return f"qwen2vl/{self.size[0]}x{self.size[1]}/{s.image_mean}/{s.image_std}"

    def token_ids(self) -> list[int]:
        t = self.tokens
        return [t.vision_start, *[t.image_pad] * self.num_placeholders(), t.vision_end]

    def patches(self) -> torch.Tensor:
        """(patches, C · temporal · patch²) float32, in merge-block order."""
        s = self.settings
        height, width = self.size
        resized = self.decoded.image.resize((width, height), Image.Resampling.BICUBIC)
        pixels = normalised(resized, s.image_mean, s.image_std)
        p, m = s.patch_size, s.merge_size
        _, gh, gw = self.grid
        blocks = pixels.reshape(3, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
        blocks = np.broadcast_to(
            blocks[:, :, :, :, :, None], (*blocks.shape[:5], s.temporal_patch_size, p, p)
        )
        return torch.from_numpy(np.ascontiguousarray(blocks).reshape(gh * gw, -1))


@dataclass(frozen=True)
class Qwen2VLImageProcessor:
    settings: Qwen2VLImageSettings
    tokens: Qwen2VLTokens

    def prepare(self, decoded: DecodedImage, detail: str | None, _image_settings=None):
        settings = self.settings.for_detail(detail)
        size = smart_resize(decoded.height, decoded.width, settings)
        return Qwen2VLImage(decoded, settings, self.tokens, size)
