"""CLIP's vision transformer as LLaVA uses it: the hidden state of a chosen layer, not the output.

A strided convolution (no bias) cuts the square image into patches; a learned class embedding
goes in front, learned position embeddings are added, and a LayerNorm (``pre_layrnorm``, the
checkpoints' spelling) precedes the blocks. The blocks are SigLIP's (``encoders/siglip.py``):
pre-norm attention and MLP with biases, here with CLIP's quick-GELU. LLaVA reads the hidden
state after a given number of blocks (``vision_feature_layer``, -2 for LLaVA-1.5: every block
but the last), so ``hidden_state`` runs only the blocks it needs; ``post_layernorm`` is loaded
with the checkpoint and not applied. Parameter names match the tower's own (under ``vision_tower.``, or ``vision_tower.vision_model.`` in older checkpoints).
"""

from __future__ import annotations

import torch
from torch import nn

from omniloom.models.encoders.siglip import SiglipConfig, SiglipEncoder, hidden_states


class ClipEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.patch_embedding = nn.Conv2d(
            cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size, bias=False
        )
        self.position_embedding = nn.Embedding(cfg.patches_per_side**2 + 1, cfg.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixels.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class ClipVisionTransformer(nn.Module):
    """(images, C, S, S) pixels → the hidden states LLaVA selects, class position first."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = ClipEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def hidden_states(self, pixels: torch.Tensor, layers) -> list[torch.Tensor]:
        """Hidden states by ``transformers``' numbering (0: the embeddings after
        ``pre_layrnorm``; k: after k blocks; negative counts from the end), in that order."""
        return hidden_states(
            self.pre_layrnorm(self.embeddings(pixels)), self.encoder.layers, layers
        )
