"""CLIP-style image preprocessing as LLaVA checkpoints use it: one fixed-size square per image.

As ``transformers``' CLIP and LLaVA image processors (their PIL backends) do it: optionally
padded to a square with the mean colour (LLaVA's ``do_pad``), resized (bicubic) so the shorter
side is ``size.shortest_edge`` (or to ``size.height`` × ``size.width``), centre-cropped to
``crop_size``, scaled to [0, 1] and normalised with CLIP's mean and standard deviation.

The encoder sees a fixed square, so every image costs the same: one ``<image>`` token per
patch, plus one for the class position when the model keeps it (``vision_feature_select_strategy``
``full``). ``detail`` has nothing to change here; the count is known before any pixel is
decoded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from omniloom.media.image import DecodedImage
from omniloom.processing.pixels import CLIP_MEAN, CLIP_STD, normalised, padded_to_square


@dataclass(frozen=True)
class ClipImageSettings:
    shortest_edge: int | None = 224  # None: resize to ``size`` exactly
    size: tuple[int, int] = (224, 224)  # (height, width) when there is no shortest edge
    crop: tuple[int, int] | None = (224, 224)  # None: no centre crop
    pad_to_square: bool = False
    do_resize: bool = True
    resample: int = Image.Resampling.BICUBIC
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD

    @classmethod
    def from_directory(cls, directory: Path) -> ClipImageSettings:
        """The checkpoint's ``preprocessor_config.json`` (the processor's defaults where absent)."""
        path = directory / "preprocessor_config.json"
        cfg = json.loads(path.read_text()) if path.exists() else {}
        base = cls()
        size = cfg.get("size") or {"shortest_edge": base.shortest_edge}
        crop = cfg.get("crop_size") or {"height": base.crop[0], "width": base.crop[1]}
        return cls(
            shortest_edge=size.get("shortest_edge"),
            size=(size.get("height", base.size[0]), size.get("width", base.size[1])),
            crop=(crop["height"], crop["width"]) if cfg.get("do_center_crop", True) else None,
            pad_to_square=cfg.get("do_pad", base.pad_to_square),
            do_resize=cfg.get("do_resize", base.do_resize),
            resample=cfg.get("resample", base.resample),
            rescale_factor=cfg.get("rescale_factor", base.rescale_factor),
            image_mean=tuple(cfg.get("image_mean", base.image_mean)),
            image_std=tuple(cfg.get("image_std", base.image_std)),
        )

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize step."""
        if not self.do_resize:
            return height, width
        if self.shortest_edge is None:
            return self.size
        short, long = sorted((height, width))
        long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, long) if height <= width else (long, self.shortest_edge)


def _centre_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """The centred ``height`` × ``width`` window; a smaller image is first centred on black."""
    if image.height < height or image.width < width:
        canvas = Image.new("RGB", (max(width, image.width), max(height, image.height)))
        offset = (
            math.ceil((canvas.width - image.width) / 2),
            math.ceil((canvas.height - image.height) / 2),
        )
        canvas.paste(image, offset)
        image = canvas
    top = (image.height - height) // 2
    left = (image.width - width) // 2
    return image.crop((left, top, left + width, top + height))


@dataclass(frozen=True)
class ClipTokens:
    image: int  # the ``<image>`` placeholder id
    per_image: int  # placeholders per image: patches, plus the class position if kept


@dataclass(frozen=True)
class ClipImage:
    decoded: DecodedImage
    settings: ClipImageSettings
    tokens: ClipTokens
    modality: str = "image"

    @property
    def content_hash(self) -> str:
        return self.decoded.content_hash

    def num_placeholders(self) -> int:
        return self.tokens.per_image

    def cache_key(self) -> str:
        s = self.settings
        return (
            f"clip/{s.shortest_edge or s.size}/{s.crop}/pad={int(s.pad_to_square)}/"
            f"{s.resample}/{s.image_mean}/{s.image_std}"
        )

    def token_ids(self) -> list[int]:
        return [self.tokens.image] * self.tokens.per_image

    def pixels(self) -> torch.Tensor:
        """(3, S, S) float32, the encoder's input."""
        s = self.settings
        image = self.decoded.image
        if s.pad_to_square:
            image = padded_to_square(image, s.image_mean)
        height, width = s.resized(image.height, image.width)
        if (height, width) != (image.height, image.width):
            image = image.resize((width, height), s.resample)
        if s.crop:
            image = _centre_crop(image, *s.crop)
        return torch.from_numpy(normalised(image, s.image_mean, s.image_std, s.rescale_factor))


@dataclass(frozen=True)
class ClipImageProcessor:
    settings: ClipImageSettings
    tokens: ClipTokens

    def prepare(self, decoded: DecodedImage, _detail: str | None, _image_settings=None):
        return ClipImage(decoded, self.settings, self.tokens)
