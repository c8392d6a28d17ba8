"""Whisper's audio encoder, as Qwen2-Audio's ``audio_tower`` has it.

Log-mel frames go through two GELU convolutions (the second halves the rate to 50 per second),
take learned position embeddings, and run through pre-norm blocks (LayerNorm, bidirectional
attention with biases except on keys, LayerNorm, GELU MLP). Qwen2-Audio then averages pairs of
positions (25 per second) before the final LayerNorm. Parameter names match the checkpoint's
``audio_tower.*``.

A clip rarely fills its 30-second window. The reference runs the whole window and masks the
padding out of attention; here only the frames the clip's positions depend on are run (the
convolutions' one-frame reach past the clip included), which gives the same numbers at a
fraction of the cost for short clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omniloom.models import meta_init
from omniloom.processing.log_mel import positions_after_convs


@dataclass(frozen=True)
class WhisperEncoderConfig:
    d_model: int = 1280
    layers: int = 32
    heads: int = 20
    ffn_dim: int = 5120
    n_mels: int = 128
    max_positions: int = 1500
    scale_embedding: bool = False
    pool: bool = True  # Qwen2-Audio averages position pairs before the final norm

    @classmethod
    def from_hf(cls, cfg: dict) -> WhisperEncoderConfig:
        """From a checkpoint's ``audio_config`` (``transformers``' defaults where keys are absent)."""
        base = cls()
        if cfg.get("activation_function", "gelu") != "gelu":
            raise ValueError(
                f"audio encoder activation {cfg['activation_function']!r} is not supported"
            )
        return cls(
            d_model=cfg.get("d_model", base.d_model),
            layers=cfg.get("encoder_layers", base.layers),
            heads=cfg.get("encoder_attention_heads", base.heads),
            ffn_dim=cfg.get("encoder_ffn_dim", base.ffn_dim),
            n_mels=cfg.get("num_mel_bins", base.n_mels),
            max_positions=cfg.get("max_source_positions", base.max_positions),
            scale_embedding=cfg.get("scale_embedding", base.scale_embedding),
        )


class WhisperAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        head_dim = width // self.heads
        split = lambda t: t.view(batch, length, self.heads, head_dim).transpose(1, 2)  # noqa: E731
        # the query is scaled before the product, as the reference does (it rounds differently)
        q = split(self.q_proj(x) * head_dim**-0.5)
        out = F.scaled_dot_product_attention(
            q, split(self.k_proj(x)), split(self.v_proj(x)), scale=1.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class WhisperEncoderLayer(nn.Module):
    def __init__(self, cfg: WhisperEncoderConfig):
        super().__init__()
        self.self_attn = WhisperAttention(cfg.d_model, cfg.heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.d_model)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(nn.Module):
    def __init__(self, cfg: WhisperEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = meta_init.embedding(cfg.max_positions, cfg.d_model)
        self.layers = nn.ModuleList(WhisperEncoderLayer(cfg) for _ in range(cfg.layers))
        self.layer_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, mel: torch.Tensor, mel_frames: int) -> torch.Tensor:
        """(tokens, d_model) for one window's (n_mels, 3000) features, of which the clip fills
        the first ``mel_frames``."""
        covered = positions_after_convs(mel_frames)
        needed = min(mel.shape[-1], 2 * covered + 1)  # the convolutions' reach past the clip
        x = F.gelu(self.conv1(mel[None, :, :needed].to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x))[:, :, :covered].transpose(1, 2)
        if self.cfg.scale_embedding:
            x = x * self.cfg.d_model**0.5
        x = x + self.embed_positions.weight[:covered]
        for layer in self.layers:
            x = layer(x)
        if self.cfg.pool:
            x = F.avg_pool1d(x.transpose(1, 2), 2, 2).transpose(1, 2)
        return self.layer_norm(x)[0]
