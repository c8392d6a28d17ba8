"""Dynamic tiling for the embedded vision path, and the image token layout it implies.

``detail``:
- ``low``: one thumbnail (the whole image letterboxed into one tile).
- ``high``: a grid of ``cols × rows`` tiles chosen by aspect ratio (at most ``max_tiles``; the
  InternVL rule: closest aspect ratio, ties go to the larger grid when the image has the pixels
  for it) plus a global thumbnail. A 1×1 grid is the thumbnail itself, so it is not repeated.
- ``auto``: ``high`` when the long side exceeds ``auto_high_above`` pixels, else ``low``.

``plan_image`` works from the size alone, so the token count is known before any pixel is
decoded or encoded; ``render_tiles`` produces the pixels that the plan describes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from omniloom.config import ImageSettings
from omniloom.errors import InvalidRequest

DETAILS = ("low", "high", "auto")
_LETTERBOX_FILL = (127, 127, 127)


@dataclass(frozen=True)
class ImagePlan:
    """How one image is cut into tiles. ``tiles`` counts grid tiles plus the thumbnail."""

    width: int
    height: int
    detail: str  # the detail actually used: "low" or "high"
    cols: int
    rows: int
    tile_size: int

    @property
    def grid_tiles(self) -> int:
        return 0 if self.detail == "low" else self.cols * self.rows

    @property
    def tiles(self) -> int:
        return self.grid_tiles + 1

    def cache_key(self) -> str:
        return f"{self.detail}:{self.cols}x{self.rows}@{self.tile_size}"


def candidate_grids(max_tiles: int) -> list[tuple[int, int]]:
    """All (cols, rows) with 1 ≤ cols·rows ≤ max_tiles, ordered by tile count then shape."""
    grids = {
        (c, r)
        for c in range(1, max_tiles + 1)
        for r in range(1, max_tiles + 1)
        if c * r <= max_tiles
    }
    return sorted(grids, key=lambda g: (g[0] * g[1], g))


def choose_grid(width: int, height: int, max_tiles: int, tile_size: int) -> tuple[int, int]:
    """Pick the grid whose aspect ratio is closest to the image's (InternVL's rule)."""
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def resolve_detail(detail: str | None, width: int, height: int, cfg: ImageSettings) -> str:
    detail = detail or "auto"
    if detail not in DETAILS:
        raise InvalidRequest(
            f"Invalid 'detail' value {detail!r}: expected one of {', '.join(DETAILS)}.",
            param="detail",
        )
    if detail == "auto":
        return "high" if max(width, height) > cfg.auto_high_above else "low"
    return detail


def plan_image(width: int, height: int, detail: str | None, cfg: ImageSettings) -> ImagePlan:
    used = resolve_detail(detail, width, height, cfg)
    cols, rows = (1, 1)
    if used == "high":
        cols, rows = choose_grid(width, height, cfg.max_tiles, cfg.tile_size)
        if cols * rows == 1:
            used = "low"
    return ImagePlan(width, height, used, cols, rows, cfg.tile_size)


def letterbox(image: Image.Image, size: int) -> Image.Image:
    """Fit the whole image into a ``size`` square keeping its aspect ratio, centred on grey."""
    scale = size / max(image.width, image.height)
    w = max(1, round(image.width * scale))
    h = max(1, round(image.height * scale))
    canvas = Image.new("RGB", (size, size), _LETTERBOX_FILL)
    canvas.paste(image.resize((w, h), Image.Resampling.BICUBIC), ((size - w) // 2, (size - h) // 2))
    return canvas


def square_tiles(canvas: Image.Image, rows: int, cols: int, side: int) -> list[Image.Image]:
    """The canvas's ``side``-pixel squares, row by row, left to right."""
    return [
        canvas.crop((c * side, r * side, (c + 1) * side, (r + 1) * side))
        for r in range(rows)
        for c in range(cols)
    ]


def grid_tiles(image: Image.Image, cols: int, rows: int, size: int) -> list[Image.Image]:
    """Resize to the grid's canvas and cut it row by row, left to right."""
    canvas = image.resize((cols * size, rows * size), Image.Resampling.BICUBIC)
    return square_tiles(canvas, rows, cols, size)


def render_tiles(image: Image.Image, plan: ImagePlan) -> np.ndarray:
    """uint8 (tiles, 3, size, size): grid tiles in reading order, then the thumbnail."""
    if (image.width, image.height) != (plan.width, plan.height):
        raise ValueError("image size does not match its plan")
    tiles = [] if plan.detail == "low" else grid_tiles(image, plan.cols, plan.rows, plan.tile_size)
    tiles.append(letterbox(image, plan.tile_size))
    arrays = np.stack([np.asarray(t, dtype=np.uint8) for t in tiles])
    return np.ascontiguousarray(arrays.transpose(0, 3, 1, 2))
