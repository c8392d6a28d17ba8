"""One image ready for the stream: its decoded pixels, tiling plan and token span."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from omniloom.config import ImageSettings
from omniloom.media.image import DecodedImage
from omniloom.processing.media_tokens import (
    MediaVocabulary,
    TileLayout,
    count_image_tokens,
    image_token_ids,
)
from omniloom.processing.tiling import ImagePlan, plan_image, render_tiles


@dataclass(frozen=True)
class ImageItem:
    decoded: DecodedImage
    plan: ImagePlan
    layout: TileLayout
    vocab: MediaVocabulary
    modality: str = "image"

    @property
    def content_hash(self) -> str:
        return self.decoded.content_hash

    def cache_key(self) -> str:
        return f"{self.plan.cache_key()}/{self.layout.key()}"

    def num_tokens(self) -> int:
        return count_image_tokens(self.plan, self.layout)

    def num_placeholders(self) -> int:
        return self.plan.tiles * self.layout.placeholders

    def token_ids(self) -> list[int]:
        return image_token_ids(self.plan, self.layout, self.vocab)

    def tiles(self) -> torch.Tensor:
        return torch.from_numpy(render_tiles(self.decoded.image, self.plan))


def prepare_image(
    decoded: DecodedImage,
    detail: str | None,
    settings: ImageSettings,
    layout: TileLayout,
    vocab: MediaVocabulary,
) -> ImageItem:
    plan = plan_image(decoded.width, decoded.height, detail, settings)
    return ImageItem(decoded, plan, layout, vocab)
