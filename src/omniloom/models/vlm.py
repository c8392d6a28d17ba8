"""The embedded default's model: encoder → projector → placeholder positions of the LLM's stream.

Text ids embed through the backbone's table; media marker ids (start/end/separators) through a
small table of their own; placeholder positions take the projected encoder features in the
order of the model's ``TileLayout``.
Output is logits over the text vocabulary only, so media tokens are never generated.
"""

from __future__ import annotations

import torch
from torch import nn

from omniloom.models.backbones.llama import LlamaForCausalLM
from omniloom.models.multimodal import MultimodalModel
from omniloom.processing.image_item import ImageItem
from omniloom.processing.media_tokens import MediaVocabulary, TileLayout


class VisionLanguageModel(MultimodalModel):
    modalities = frozenset({"text", "image"})

    def __init__(
        self,
        backbone: LlamaForCausalLM,
        encoder: nn.Module,
        projector: nn.Module,
        media_vocab: MediaVocabulary,
    ):
        super().__init__(backbone)
        self.encoder = encoder
        self.projector = projector
        self.media_vocab = media_vocab
        hidden = backbone.config.hidden_size
        self.media_embed = nn.Embedding(media_vocab.size, hidden)
        self._pad_ids = torch.tensor(sorted(media_vocab.pad_ids().values()))
        self.tile_layout = TileLayout.raster(self.tokens_per_tile())

    @property
    def placeholder_ids(self) -> torch.Tensor:
        """Ids whose embeddings are replaced by projected media features."""
        return self._pad_ids

    def tokens_per_tile(self) -> int:
        return self.projector.num_output_tokens(self.encoder.tokens_per_tile())

    @torch.inference_mode()
    def encode_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """uint8 tiles (N, 3, S, S) → projected embeddings (N · tokens_per_tile, hidden)."""
        enc_param = next(self.encoder.parameters())
        features = self.encoder(tiles.to(enc_param.device))
        projected = self.project(features.to(next(self.projector.parameters()).dtype))
        return projected.reshape(-1, projected.shape[-1]).to(self.dtype)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features (N, cells, dim) → projected tokens (N, cells, hidden) in span order."""
        return self.projector(features)[:, self.tile_layout.order()]

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Embed a 1-D id tensor; placeholders come back as zeros for the caller to fill."""
        base = self.media_vocab.base_id
        is_media = ids >= base
        out = self.backbone.embed(ids.clamp(max=base - 1))
        if is_media.any():
            media = self.media_embed((ids[is_media] - base).to(self.device)).to(out.dtype)
            out[is_media] = media
            out[torch.isin(ids, self._pad_ids.to(ids.device))] = 0
        return out

    def placeholder_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.isin(ids, self._pad_ids.to(ids.device))

    def encode(self, items: list[ImageItem]) -> list[torch.Tensor]:
        """Every item's tiles through one encoder call; one tensor per item."""
        if not items:
            return []
        tiles = [item.tiles() for item in items]
        encoded = self.encode_tiles(torch.cat(tiles))
        return list(encoded.split([t.shape[0] * self.tokens_per_tile() for t in tiles]))
