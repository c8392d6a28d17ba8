"""SigLIP's vision transformer (Idefics3, SmolVLM, LLaVA-OneVision), and Idefics3's pixel shuffle.

Square views are cut into patches by a strided convolution, given learned position embeddings,
and run through pre-norm blocks (LayerNorm, full bidirectional attention with biases,
LayerNorm, a tanh-GELU MLP), then a final LayerNorm. Idefics3 looks positions up by bucketing
each patch's fractional coordinates (its variable-resolution scheme); every view here is a full
tile, so the ids are computed once, with the same float arithmetic. Plain SigLIP (OneVision)
gives each patch its own position in order. ``hidden_states`` returns the states of chosen
blocks, as LLaVA-style models read them (CLIP's tower in ``clip.py`` shares the blocks).
The connector folds each ``scale_factor``² block of patches into one vector (pixel shuffle)
and projects it to the language model's width. Parameter names match the checkpoints'
``vision_model.*`` and ``connector.*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IDEFICS3_VISION_DEFAULTS = dict(
    hidden_size=1152,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=16,
    image_size=224,
    patch_size=32,
    layer_norm_eps=1e-6,
    hidden_act="gelu_pytorch_tanh",
)


@dataclass(frozen=True)
class SiglipConfig:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    image_size: int
    patch_size: int
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    num_channels: int = 3

    @classmethod
    def from_hf(cls, cfg: dict, defaults: dict | None = None) -> SiglipConfig:
        """From a checkpoint's ``vision_config``; keys it leaves out take ``transformers``'
        defaults for that config class (Idefics3's vision config unless ``defaults`` say)."""
        cfg = (defaults or IDEFICS3_VISION_DEFAULTS) | cfg
        return cls(
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            image_size=cfg["image_size"],
            patch_size=cfg["patch_size"],
            layer_norm_eps=cfg["layer_norm_eps"],
            hidden_act=cfg["hidden_act"],
            num_channels=cfg.get("num_channels", 3),
        )

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size


ACTIVATIONS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


def bucketed_position_ids(cfg: SiglipConfig, patches_per_side: int) -> torch.Tensor:
    """Idefics3's position ids for a full square view of ``patches_per_side``² patches."""
    n = cfg.patches_per_side
    boundaries = torch.arange(1 / n, 1.0, 1 / n)
    step = 1.0 / torch.tensor([patches_per_side])
    steps = torch.arange(patches_per_side, dtype=torch.float32) * step
    buckets = torch.bucketize(steps.clamp(max=1.0 - 1e-6), boundaries, right=True)
    return (buckets[:, None] * n + buckets[None, :]).reshape(-1)


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipConfig, bucketed: bool):
        super().__init__()
        self.cfg = cfg
        self.bucketed = bucketed
        self.patch_embedding = nn.Conv2d(
            cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size
        )
        self.position_embedding = nn.Embedding(cfg.patches_per_side**2, cfg.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)
        if not self.bucketed:
            return patches + self.position_embedding.weight
        side = pixels.shape[-1] // self.cfg.patch_size
        ids = bucketed_position_ids(self.cfg, side).to(pixels.device)
        return patches + self.position_embedding(ids)


class SiglipAttention(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        width = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.num_heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        )
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


class SiglipMlp(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SiglipBlock(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMlp(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipBlock(cfg) for _ in range(cfg.num_layers))


def hidden_states(x: torch.Tensor, blocks: nn.ModuleList, layers) -> list[torch.Tensor]:
    """The hidden states ``transformers`` numbers ``layers`` (0: ``x``, the blocks' input; k:
    after k blocks; negative counts from the end), running only the blocks they need."""
    wanted = [layer % (len(blocks) + 1) for layer in layers]
    kept = {0: x} if 0 in wanted else {}  # only the wanted states stay alive
    for depth, block in enumerate(blocks[: max(wanted)], start=1):
        x = block(x)
        if depth in wanted:
            kept[depth] = x
    return [kept[layer] for layer in wanted]


class SiglipVisionTransformer(nn.Module):
    """(views, C, S, S) pixels → (views, patches, hidden) after the final LayerNorm. Position
    ids are Idefics3's buckets where ``bucketed``, else SigLIP's own (one per patch, in order)."""

    def __init__(self, cfg: SiglipConfig, bucketed: bool = True):
        super().__init__()
        self.cfg = cfg
        self.embeddings = SiglipEmbeddings(cfg, bucketed)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(self.hidden_states(pixels, [-1])[0])

    def hidden_states(self, pixels: torch.Tensor, layers) -> list[torch.Tensor]:
        """Hidden states by ``transformers``' numbering (the last one before ``post_layernorm``)."""
        return hidden_states(self.embeddings(pixels), self.encoder.layers, layers)


class ModalityProjection(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.proj = nn.Linear(in_features, out_features, bias=False)


class PixelShuffleConnector(nn.Module):
    """Each ``scale``×``scale`` block of patch vectors concatenated, then projected."""

    def __init__(self, vision_width: int, text_width: int, scale: int):
        super().__init__()
        self.scale = scale
        self.modality_projection = ModalityProjection(vision_width * scale**2, text_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views, length, width = x.shape
        side, s = int(length**0.5), self.scale
        x = x.view(views, side, side // s, width * s).transpose(1, 2)
        x = x.reshape(views, side // s, side // s, width * s * s).transpose(1, 2)
        return self.modality_projection.proj(x.reshape(views, length // s**2, width * s * s))
