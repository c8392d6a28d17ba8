"""The embedded default's model: encoder → projector → placeholder positions of the LLM's stream.

Text ids embed through the backbone's table; media marker ids (start/end/separators) through a
small table of their own; placeholder positions take the projected encoder features in the
order of the model's ``TileLayout``.
Output is logits over the text vocabulary only, so media tokens are never generated.
With an audio branch attached (``attach_audio``), audio clips take their placeholders too.
"""

from __future__ import annotations

import torch
from torch import nn

from omniloom.models.audio_branch import AudioBranch
from omniloom.models.backbones.llama import LlamaForCausalLM
from omniloom.models.multimodal import MultimodalModel
from omniloom.processing.media_tokens import MediaVocabulary, TileLayout

AUDIO_MARKERS = ("<|audio_start|>", "<|audio_end|>")


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
        self.audio: AudioBranch | None = None

    def attach_audio(self, branch: AudioBranch, markers: torch.Tensor | None = None) -> None:
        """Hear audio through ``branch``; ``markers`` are the audio start/end embeddings."""
        self.audio = branch.to(self.device)
        self.modalities = frozenset({*self.modalities, "audio"})
        if markers is not None:
            weight = self.media_embed.weight
            weight.data[self.audio_marker_rows] = markers.to(weight.dtype)

    @property
    def audio_marker_rows(self) -> list[int]:
        """The rows of ``<|audio_start|>`` and ``<|audio_end|>`` in the media-token table."""
        return [self.media_vocab.id(n) - self.media_vocab.base_id for n in AUDIO_MARKERS]

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

    def encode(self, items: list) -> list[torch.Tensor]:
        """Every image item's tiles (video frames' too) through one encoder call, each audio
        clip through the audio branch; one tensor per item, in order."""
        images = [i for i, item in enumerate(items) if item.modality in ("image", "video")]
        out: list[torch.Tensor | None] = [None] * len(items)
        if images:
            tiles = [items[i].tiles() for i in images]
            encoded = self.encode_tiles(torch.cat(tiles))
            sizes = [t.shape[0] * self.tokens_per_tile() for t in tiles]
            for i, tensor in zip(images, encoded.split(sizes), strict=True):
                out[i] = tensor
        for i, item in enumerate(items):
            if item.modality == "audio":
                out[i] = self.encode_audio(item)
        return out

    @torch.inference_mode()
    def encode_audio(self, clip) -> torch.Tensor:
        if self.audio is None:
            raise ValueError("this model has no audio branch")
        windows = [(mel.to(self.device), frames) for mel, frames in clip.features()]
        return self.audio(windows).to(self.dtype)
