"""LLaVA-OneVision's image preprocessing: the "anyres" grid of square views, and its token count.

As ``transformers``' LLaVA-OneVision image processor (its PIL backend) and model do it. An image
that is the only one in its prompt picks the grid resolution (``image_grid_pinpoints``) that
keeps the most of its pixels while wasting the least, is resized (bicubic) to fit it and
centred on black, and cut into S×S views (S = the encoder's side, 384); the whole image
resized to S×S goes first. Its features are the whole image's, then the grid's, with the
black borders cut away again ("unpadding"), shrunk bilinearly when they exceed
``anyres_max_N`` views' worth, and one ``image_newline`` vector at the end of every row. An
image that shares its prompt with others is padded to a square in the mean colour and sent as
one view, plus one newline vector. ``arrange`` makes that choice once all of a prompt's images
are known, so the count is still exact before any pixel is decoded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from omniloom.media.image import DecodedImage
from omniloom.processing.pixels import (
    CLIP_MEAN,
    CLIP_STD,
    normalised_views,
    padded_to_square,
)
from omniloom.processing.tiling import square_tiles

DEFAULT_GRID = tuple((384 * h, 384 * w) for h in range(1, 7) for w in range(1, 7))


@dataclass(frozen=True)
class OnevisionSettings:
    side: int = 384  # every view's side
    grid_pinpoints: tuple[tuple[int, int], ...] = DEFAULT_GRID  # (height, width) choices
    max_views: int = 9  # ``anyres_max_9``: features beyond this many views are shrunk
    resample: int = Image.Resampling.BICUBIC
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD

    @classmethod
    def from_directory(cls, directory: Path, aspect_ratio: str) -> OnevisionSettings:
        """The checkpoint's ``preprocessor_config.json`` and the model's ``vision_aspect_ratio``."""
        path = directory / "preprocessor_config.json"
        cfg = json.loads(path.read_text()) if path.exists() else {}
        base = cls()
        size = cfg.get("size") or {}
        side = size.get("height") or size.get("shortest_edge") or base.side
        pinpoints = cfg.get("image_grid_pinpoints") or base.grid_pinpoints
        return cls(
            side=side,
            grid_pinpoints=tuple((int(h), int(w)) for h, w in pinpoints),
            max_views=int(aspect_ratio.removeprefix("anyres_max_")),
            resample=cfg.get("resample", base.resample),
            rescale_factor=cfg.get("rescale_factor", base.rescale_factor),
            image_mean=tuple(cfg.get("image_mean", base.image_mean)),
            image_std=tuple(cfg.get("image_std", base.image_std)),
        )


def best_resolution(height: int, width: int, choices) -> tuple[int, int]:
    """The (height, width) that keeps the most of the image's pixels, then wastes the least."""
    best, most_kept, least_wasted = choices[0], 0, float("inf")
    for h, w in choices:
        scale = min(w / width, h / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        wasted = w * h - kept
        if kept > most_kept or (kept == most_kept and wasted < least_wasted):
            best, most_kept, least_wasted = (h, w), kept, wasted
    return best


def fitted_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """The image's size scaled to fit ``target`` (height, width), aspect kept."""
    target_h, target_w = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), target_h), target_w
    return target_h, min(math.ceil(width * scale_h), target_w)


def unpadded_size(height: int, width: int, rows: int, cols: int) -> tuple[int, int]:
    """The grid's feature rows and columns once the black borders are cut away."""
    if width / height > cols / rows:
        kept = int(round(height * (cols / width), 7))
        return rows - (rows - kept) // 2 * 2, cols
    kept = int(round(width * (rows / height), 7))
    return rows, cols - (cols - kept) // 2 * 2


@dataclass(frozen=True)
class OnevisionLayout:
    """Where an image's features come from: the grid of views, and its feature map's size."""

    grid: tuple[int, int]  # views along (height, width); (0, 0) for the single padded view
    best: tuple[int, int]  # the grid resolution (height, width)
    unpadded: tuple[int, int]  # feature rows, columns after unpadding
    shrunk: tuple[int, int] | None  # after the bilinear shrink, where it applies

    @property
    def views(self) -> int:
        return 1 + self.grid[0] * self.grid[1]

    @property
    def feature_map(self) -> tuple[int, int]:
        return self.shrunk or self.unpadded


def anyres_layout(height: int, width: int, s: OnevisionSettings, per_side: int) -> OnevisionLayout:
    best = best_resolution(height, width, s.grid_pinpoints)
    grid = (best[0] // s.side, best[1] // s.side)
    rows, cols = unpadded_size(height, width, per_side * grid[0], per_side * grid[1])
    ratio = math.sqrt(rows * cols / (s.max_views * per_side**2))
    shrunk = (int(rows // ratio), int(cols // ratio)) if ratio > 1.1 else None
    return OnevisionLayout(grid, best, (rows, cols), shrunk)


SINGLE_VIEW = OnevisionLayout((0, 0), (0, 0), (0, 0), None)


@dataclass(frozen=True)
class OnevisionImage:
    decoded: DecodedImage
    settings: OnevisionSettings
    image_token: int
    per_side: int  # features per side of one view
    layout: OnevisionLayout
    modality: str = "image"

    @property
    def content_hash(self) -> str:
        return self.decoded.content_hash

    def num_placeholders(self) -> int:
        base = self.per_side**2
        if self.layout is SINGLE_VIEW:
            return base + 1
        rows, cols = self.layout.feature_map
        return base + rows * (cols + 1)

    def cache_key(self) -> str:
        s, lay = self.settings, self.layout
        return (
            f"onevision/{lay.grid[0]}x{lay.grid[1]}/{lay.feature_map}/{s.side}/{s.max_views}/"
            f"{s.resample}/{s.image_mean}/{s.image_std}"
        )

    def token_ids(self) -> list[int]:
        return [self.image_token] * self.num_placeholders()

    def views(self) -> torch.Tensor:
        """(views, 3, S, S) float32: the whole image, then the grid's views row by row."""
        s = self.settings
        square = (s.side, s.side)
        if self.layout is SINGLE_VIEW:
            views = [padded_to_square(self.decoded.image, s.image_mean).resize(square, s.resample)]
        else:
            views = [self.decoded.image.resize(square, s.resample), *self._grid_views()]
        return normalised_views(views, s)

    def _grid_views(self) -> list[Image.Image]:
        s, image = self.settings, self.decoded.image
        best_h, best_w = self.layout.best
        height, width = fitted_size(image.height, image.width, self.layout.best)
        canvas = Image.new("RGB", (best_w, best_h))
        canvas.paste(
            image.resize((width, height), s.resample),
            ((best_w - width) // 2, (best_h - height) // 2),
        )
        return square_tiles(canvas, *self.layout.grid, s.side)


@dataclass(frozen=True)
class OnevisionImageProcessor:
    settings: OnevisionSettings
    image_token: int
    per_side: int

    def prepare(self, decoded: DecodedImage, detail: str | None, _image_settings=None):
        """``detail: low`` sends the one padded view a multi-image prompt sends."""
        if detail == "low":
            layout = SINGLE_VIEW
        else:
            layout = anyres_layout(decoded.height, decoded.width, self.settings, self.per_side)
        return OnevisionImage(decoded, self.settings, self.image_token, self.per_side, layout)

    def arrange(self, items: list[OnevisionImage]) -> list[OnevisionImage]:
        """A prompt with several images sends each as one padded view."""
        if len(items) < 2:
            return items
        return [replace(item, layout=SINGLE_VIEW) for item in items]
