"""Special tokens that mark media in the token stream, and the image layout built from them.

Media tokens get ids *after* the text vocabulary, so no text a user writes can produce one.
``*_pad`` positions are placeholders whose embeddings the VLM replaces with encoder+projector
output; the others (start/end, tile separators) have learned embeddings of their own. Audio and
video tokens are reserved now so those modalities plug in without renumbering.
"""

from __future__ import annotations

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


def count_image_tokens(plan: ImagePlan, tokens_per_tile: int) -> int:
    """Analytic prompt-token count for one image (placeholders plus markers)."""
    if plan.detail == "low":
        return 2 + tokens_per_tile
    n = plan.grid_tiles
    return 3 + (n + 1) * tokens_per_tile + n


def image_token_ids(plan: ImagePlan, tokens_per_tile: int, vocab: MediaVocabulary) -> list[int]:
    """The image's span: start, each grid tile then its separator, the global view, end."""
    pad = [vocab.id("<|image_pad|>")] * tokens_per_tile
    ids = [vocab.id("<|image_start|>")]
    if plan.detail == "high":
        for _ in range(plan.rows):
            for c in range(plan.cols):
                sep = "<|tile_row_sep|>" if c == plan.cols - 1 else "<|tile_col_sep|>"
                ids += [*pad, vocab.id(sep)]
        ids.append(vocab.id("<|image_global|>"))
    ids += [*pad, vocab.id("<|image_end|>")]
    return ids
