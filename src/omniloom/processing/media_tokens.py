"""Special tokens that mark media in the token stream, and the image layout built from them.

Media tokens get ids *after* the text vocabulary, so no text a user writes can produce one.
``*_pad`` positions are placeholders whose embeddings the VLM replaces with encoder+projector
output; the others (start/end, tile separators) have learned embeddings of their own. Audio and
video tokens are reserved now so those modalities plug in without renumbering.

Inside a tile, a ``TileLayout`` sets the placeholders' order. ``raster`` is the encoder's grid
row by row (LLaVA). ``places`` groups the cells by the tile's nine regions (thirds across and
down), each group after the words for its place as ordinary text tokens ("top left", "centre"):
the LLM reads where a cell is from words it knows instead of from a grid index it would have to
count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omniloom.processing.tiling import ImagePlan

MEDIA_TOKEN_NAMES = (
    "<|image_start|>",
    "<|image_end|>",
    "<|image_pad|>",
    "<|tile_col_sep|>",
    "<|tile_row_sep|>",
    "<|image_global|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
    "<|video_start|>",
    "<|video_end|>",
    "<|video_pad|>",
    "<|frame_sep|>",
)


@dataclass(frozen=True)
class MediaVocabulary:
    """Ids of the media tokens, numbered from ``base_id`` (the text vocabulary size)."""

    base_id: int

    def id(self, name: str) -> int:
        return self.base_id + MEDIA_TOKEN_NAMES.index(name)

    @property
    def size(self) -> int:
        return len(MEDIA_TOKEN_NAMES)

    def pad_ids(self) -> dict[str, int]:
        """Placeholder id per modality."""
        return {m: self.id(f"<|{m}_pad|>") for m in ("image", "audio", "video")}

    def name(self, token_id: int) -> str:
        return MEDIA_TOKEN_NAMES[token_id - self.base_id]


PLACE_WORDS = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)


@dataclass(frozen=True)
class TileLayout:
    """One tile's span: groups of encoder cells (indices into its grid), each after the text
    ids of its label (none in ``raster``)."""

    name: str
    groups: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # (label ids, cells)

    @classmethod
    def raster(cls, cells: int) -> TileLayout:
        return cls("raster", (((), tuple(range(cells))),))

    @classmethod
    def places(cls, side: int, encode: Callable[[str], list[int]]) -> TileLayout:
        """Cells of a ``side``×``side`` grid by the third their centre falls in, row-major over
        the nine places; each group after ``encode(" top left")`` and so on."""
        third = [int(3 * (i + 0.5) / side) for i in range(side)]
        groups = []
        for row_third, words in enumerate(PLACE_WORDS):
            for col_third, word in enumerate(words):
                cells = tuple(
                    r * side + c
                    for r in range(side)
                    for c in range(side)
                    if (third[r], third[c]) == (row_third, col_third)
                )
                groups.append((tuple(encode(" " + word)), cells))
        return cls("places", tuple(groups))

    @property
    def placeholders(self) -> int:
        return sum(len(cells) for _, cells in self.groups)

    @property
    def length(self) -> int:
        """Tokens one tile takes in the span: its placeholders and its labels."""
        return self.placeholders + sum(len(label) for label, _ in self.groups)

    def order(self) -> list[int]:
        """Encoder cells in the order the placeholders take them."""
        return [cell for _, cells in self.groups for cell in cells]

    def token_ids(self, pad_id: int) -> list[int]:
        return [t for label, cells in self.groups for t in (*label, *[pad_id] * len(cells))]

    def key(self) -> str:
        return f"{self.name}{self.placeholders}"


def count_image_tokens(plan: ImagePlan, layout: TileLayout) -> int:
    """Analytic prompt-token count for one image (placeholders, labels and markers)."""
    if plan.detail == "low":
        return 2 + layout.length
    n = plan.grid_tiles
    return 3 + (n + 1) * layout.length + n


def image_token_ids(plan: ImagePlan, layout: TileLayout, vocab: MediaVocabulary) -> list[int]:
    """The image's span: start, each grid tile then its separator, the global view, end."""
    pad = layout.token_ids(vocab.id("<|image_pad|>"))
    ids = [vocab.id("<|image_start|>")]
    if plan.detail == "high":
        for _ in range(plan.rows):
            for c in range(plan.cols):
                sep = "<|tile_row_sep|>" if c == plan.cols - 1 else "<|tile_col_sep|>"
                ids += [*pad, vocab.id(sep)]
        ids.append(vocab.id("<|image_global|>"))
    ids += [*pad, vocab.id("<|image_end|>")]
    return ids
