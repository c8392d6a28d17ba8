"""What the engine runs, whatever the family: a decoder backbone with media spliced into it.

A model spec (``models/specs/``) builds one ``MultimodalModel`` per checkpoint. The engine
only calls the methods here: ``encode`` a batch of media items (any modality the model has)
into one embedding tensor each, ``embed_prompt`` to splice those into the prompt's
placeholder positions, ``embed_ids`` for generated tokens, and ``prompt_positions`` for the
rotary positions of every prompt token (1-D for most families, three axes for M-RoPE). A text
generated after the prompt continues at ``position + position_delta(prompt)``.

``splice_media`` is the one place placeholder positions take media embeddings; the trainer
uses it for its padded batches too.
"""

from __future__ import annotations

import torch
from torch import nn

from omniloom.models.backbones.llama import LlamaForCausalLM
from omniloom.processing.prompt import MediaItem, Prompt


def splice_media(
    embeds: torch.Tensor, placeholders: torch.Tensor, media: list[torch.Tensor]
) -> torch.Tensor:
    """Write ``media`` (in span order) into the rows of ``embeds`` where ``placeholders`` is
    set (any leading shape); the counts must agree exactly."""
    wanted = int(placeholders.sum())
    if not media:
        if wanted:
            raise ValueError("prompt has media placeholders but no media embeddings were given")
        return embeds
    features = torch.cat(media).to(embeds.dtype)
    if features.shape[0] != wanted:
        raise ValueError(f"{wanted} placeholders but {features.shape[0]} media embeddings")
    embeds[placeholders] = features
    return embeds


class MultimodalModel(nn.Module):
    """Base class: a text-only model as it stands; families with media override ``encode``,
    ``placeholder_mask`` and, where positions are not 1-D, ``prompt_positions``."""

    modalities: frozenset[str] = frozenset({"text"})

    def __init__(self, backbone: LlamaForCausalLM):
        super().__init__()
        self.backbone = backbone

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.activation_dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.model.embed_tokens.weight.device

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Embed a 1-D id tensor; placeholders come back as the caller is to overwrite them."""
        return self.backbone.embed(ids)

    def encode(self, items: list[MediaItem]) -> list[torch.Tensor]:
        """One (placeholders, hidden) tensor per item, in order, batched where the encoder can."""
        if items:
            raise ValueError(f"this model has no encoder for {items[0].modality}")
        return []

    def placeholder_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Which ids are placeholders that media embeddings replace."""
        return torch.zeros_like(ids, dtype=torch.bool)

    @torch.inference_mode()
    def embed_prompt(self, prompt: Prompt, media: list[torch.Tensor]) -> torch.Tensor:
        """(T, hidden) embeddings for the whole prompt; ``media`` follow span order."""
        ids = torch.tensor(prompt.token_ids, device=self.device)
        return splice_media(self.embed_ids(ids), self.placeholder_mask(ids), media)

    def prompt_positions(self, prompt: Prompt) -> torch.Tensor:
        """Rotary position of every prompt token: (T,) here."""
        return torch.arange(len(prompt.token_ids))

    @staticmethod
    def position_delta(positions: torch.Tensor) -> int:
        """What generated tokens add to their index: one past the prompt's furthest position."""
        return int(positions.max()) + 1 - positions.shape[-1] if positions.numel() else 0
