"""The vision-language model: encoder → projector → placeholder positions of the LLM's stream.

Text ids embed through the backbone's table; media marker ids (start/end/separators) through a
small table of their own; placeholder positions take the projected encoder features in the
order of the model's ``TileLayout``.
Output is logits over the text vocabulary only, so media tokens are never generated.
"""

from __future__ import annotations

import torch
from torch import nn

from omniloom.models.backbones.llama import LlamaForCausalLM
from omniloom.processing.media_tokens import MediaVocabulary, TileLayout
from omniloom.processing.prompt import Prompt


class VisionLanguageModel(nn.Module):
    def __init__(
        self,
        backbone: LlamaForCausalLM,
        encoder: nn.Module,
        projector: nn.Module,
        media_vocab: MediaVocabulary,
    ):
        super().__init__()
        self.backbone = backbone
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

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.activation_dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.model.embed_tokens.weight.device

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

    @torch.inference_mode()
    def embed_prompt(self, prompt: Prompt, media_embeddings: list[torch.Tensor]) -> torch.Tensor:
        """(T, hidden) embeddings for the whole prompt; ``media_embeddings`` follow span order."""
        ids = torch.tensor(prompt.token_ids, device=self.device)
        embeds = self.embed_ids(ids)
        placeholders = torch.isin(ids, self._pad_ids.to(ids.device))
        if media_embeddings:
            features = torch.cat(media_embeddings).to(embeds.dtype)
            if features.shape[0] != int(placeholders.sum()):
                raise ValueError(
                    f"{int(placeholders.sum())} placeholders but {features.shape[0]} media embeddings"
                )
            embeds[placeholders] = features
        elif placeholders.any():
            raise ValueError("prompt has media placeholders but no media embeddings were given")
        return embeds
