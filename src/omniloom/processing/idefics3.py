"""Idefics3's and SmolVLM's image preprocessing: a grid of square tiles plus the whole image.

As ``transformers``' Idefics3 image processor (its PIL backend) does it: the image is resized
(Lanczos) so its longest edge is ``size.longest_edge``, then up to multiples of the encoder's
tile side ``max_image_size.longest_edge`` (M), and cut into rows × columns of M×M tiles; a
copy of the whole image resized to M×M comes last. An image that fits one tile, or any image
with splitting off (``detail: low``), is that one global view. Pixels are scaled to [0, 1]
and normalised with the checkpoint's mean and standard deviation.

Every view becomes ``image_seq_len`` ``<image>`` tokens. The span is the processor's text,
``<fake_token_around_image><row_r_col_c><image>×N`` per tile with a newline after each row,
then a newline and ``<fake_token_around_image><global-img><image>×N<fake_token_around_image>``;
the text pieces between special tokens are tokenized with the checkpoint's tokenizer, as the
processor's one pass over the whole string does. The count follows from the image's size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from omniloom.media.image import DecodedImage
from omniloom.processing.pixels import normalised_views
from omniloom.processing.tiling import square_tiles

MAX_IMAGE_SIDE = 4096  # the processor's absolute bound on the resized image
_STANDARD_MEAN = (0.5, 0.5, 0.5)
_STANDARD_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Idefics3ImageSettings:
    longest_edge: int = 4 * 364  # the resized image's longest edge
    tile: int = 364  # the encoder's square input side (``max_image_size.longest_edge``)
    do_resize: bool = True
    do_image_splitting: bool = True
    resample: int = Image.Resampling.LANCZOS
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, ...] = _STANDARD_MEAN
    image_std: tuple[float, ...] = _STANDARD_STD

    @classmethod
    def from_directory(cls, directory: Path) -> Idefics3ImageSettings:
        """The checkpoint's ``preprocessor_config.json`` (the processor's defaults where absent)."""
        path = directory / "preprocessor_config.json"
        cfg = json.loads(path.read_text()) if path.exists() else {}
        base = cls()
        return cls(
            longest_edge=(cfg.get("size") or {}).get("longest_edge", base.longest_edge),
            tile=(cfg.get("max_image_size") or {}).get("longest_edge", base.tile),
            do_resize=cfg.get("do_resize", base.do_resize),
            do_image_splitting=cfg.get("do_image_splitting", base.do_image_splitting),
            resample=cfg.get("resample", base.resample),
            rescale_factor=cfg.get("rescale_factor", base.rescale_factor),
            image_mean=tuple(cfg.get("image_mean", base.image_mean)),
            image_std=tuple(cfg.get("image_std", base.image_std)),
        )

    def for_detail(self, detail: str | None) -> Idefics3ImageSettings:
        """``low``: the global view alone; otherwise the checkpoint's own splitting."""
        return replace(self, do_image_splitting=False) if detail == "low" else self


def _longest_edge_to(height: int, width: int, longest: int) -> tuple[int, int]:
    """The longest edge set to ``longest`` (up or down), the other kept even and ≥ 1."""
    aspect = width / height
    if width >= height:
        width = longest
        height = int(width / aspect)
        height += height % 2
    else:
        height = longest
        width = int(height * aspect)
        width += width % 2
    return max(height, 1), max(width, 1)


def _below_upper_bound(height: int, width: int, bound: int) -> tuple[int, int]:
    aspect = width / height
    if width >= height and width > bound:
        width, height = bound, int(bound / aspect)
    elif height > width and height > bound:
        height, width = bound, int(bound * aspect)
    return max(height, 1), max(width, 1)


def _tile_multiples(height: int, width: int, tile: int) -> tuple[int, int]:
    """Both sides rounded up to multiples of ``tile``, as the processor computes them."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    return height, width


@dataclass(frozen=True)
class Idefics3Layout:
    resized: tuple[int, int]  # (height, width) after the longest-edge resize
    split: tuple[int, int]  # (height, width) cut into tiles; the global view when unsplit
    rows: int  # 0: a single global view
    cols: int

    @property
    def views(self) -> int:
        return self.rows * self.cols + 1 if self.rows else 1


def layout(height: int, width: int, s: Idefics3ImageSettings) -> Idefics3Layout:
    if s.do_resize:
        height, width = _longest_edge_to(height, width, s.longest_edge)
        height, width = _below_upper_bound(height, width, MAX_IMAGE_SIDE)
    if not s.do_image_splitting:
        return Idefics3Layout((height, width), (s.tile, s.tile), 0, 0)
    split = _tile_multiples(height, width, s.tile)
    if split[0] > s.tile or split[1] > s.tile:
        return Idefics3Layout((height, width), split, split[0] // s.tile, split[1] // s.tile)
    return Idefics3Layout((height, width), split, 0, 0)


@dataclass(frozen=True)
class Idefics3Tokens:
    """The checkpoint's ids for an image's span, and its tokenization of the text pieces."""

    fake_around_image: int
    image: int
    global_image: list[int]
    tile_tags: dict[tuple[int, int], list[int]]  # (row, col) from 1 → ``<row_r_col_c>``'s ids
    newline: list[int]
    blank_line: list[int]  # "\n\n": a row's end and the global view's leading newline
    image_seq_len: int

    @classmethod
    def from_tokenizer(cls, tokenizer, image_token_id: int, image_seq_len: int) -> Idefics3Tokens:
        return cls(
            fake_around_image=tokenizer.token_id("<fake_token_around_image>"),
            image=image_token_id,
            global_image=tokenizer.encode("<global-img>"),
            tile_tags={
                (r, c): tokenizer.encode(f"<row_{r}_col_{c}>")
                for r in range(1, 7)
                for c in range(1, 7)
            },
            newline=tokenizer.encode("\n"),
            blank_line=tokenizer.encode("\n\n"),
            image_seq_len=image_seq_len,
        )

    def span(self, rows: int, cols: int) -> list[int]:
        images = [self.image] * self.image_seq_len
        glob = [self.fake_around_image, *self.global_image, *images, self.fake_around_image]
        if not rows:
            return glob
        ids: list[int] = []
        for r in range(1, rows + 1):
            for c in range(1, cols + 1):
                ids += [self.fake_around_image, *self.tile_tags[r, c], *images]
            ids += self.newline if r < rows else self.blank_line
        return ids + glob


@dataclass(frozen=True)
class Idefics3Image:
    decoded: DecodedImage
    settings: Idefics3ImageSettings
    tokens: Idefics3Tokens
    layout: Idefics3Layout
    modality: str = "image"

    @property
    def content_hash(self) -> str:
        return self.decoded.content_hash

    def num_placeholders(self) -> int:
        return self.layout.views * self.tokens.image_seq_len

    def cache_key(self) -> str:
        s, lay = self.settings, self.layout
        return (
            f"idefics3/{lay.resized[0]}x{lay.resized[1]}/{lay.split[0]}x{lay.split[1]}/"
            f"{lay.rows}x{lay.cols}/{s.tile}/{s.resample}/{s.image_mean}/{s.image_std}"
        )

    def token_ids(self) -> list[int]:
        return self.tokens.span(self.layout.rows, self.layout.cols)

    def views(self) -> torch.Tensor:
        """(views, 3, tile, tile) float32: the tiles row by row, then the global view."""
        s, lay = self.settings, self.layout
        resize = lambda img, h, w: img.resize((w, h), s.resample)  # noqa: E731
        image = self.decoded.image
        if s.do_resize:
            image = resize(image, *lay.resized)
        image = resize(image, *lay.split)
        views = square_tiles(image, lay.rows, lay.cols, s.tile)
        if lay.rows:
            image = resize(image, s.tile, s.tile)
        return normalised_views([*views, image], s)


@dataclass(frozen=True)
class Idefics3ImageProcessor:
    settings: Idefics3ImageSettings
    tokens: Idefics3Tokens

    def prepare(self, decoded: DecodedImage, detail: str | None, _image_settings=None):
        settings = self.settings.for_detail(detail)
        return Idefics3Image(
            decoded, settings, self.tokens, layout(decoded.height, decoded.width, settings)
        )
