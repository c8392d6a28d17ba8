"""Qwen2-VL's and Qwen2.5-VL's vision transformer: native-resolution patches, 2-D rotary positions.

Each image arrives as its 14×14 patches (already normalised and grouped by 2×2 merge block,
see ``processing/qwen2_vl.py``). A 3-D convolution embeds them (the temporal patch of 2
repeats a still image), the blocks attend within each image only, rotating queries and keys by
the patch's row (first half of each head's rotary dimensions) and column (second half), and the
patch merger folds each 2×2 block into one token of the language model's width. Parameter names
match the checkpoints' ``visual.*`` so they load without renaming.

Qwen2.5-VL changes three things: RMSNorm instead of LayerNorm, a gated SiLU MLP, and window
attention. Its blocks attend within windows of ``window_size`` pixels (8×8 patches for the
shipped checkpoints) except the ``fullatt_block_indexes``, which see the whole image; the
patches are reordered window by window (at 2×2 merge-block granularity) before the blocks and
the merged tokens put back in raster order after the merger.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omniloom.models.backbones.llama import RMSNorm, apply_rope


@dataclass(frozen=True)
class VisionConfig:
    depth: int
    embed_dim: int
    num_heads: int
    hidden_size: int  # the language model's width: what the merger outputs
    mlp_ratio: float = 4.0
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    rope_theta: float = 10000.0
    hidden_act: str = "quick_gelu"
    norm: str = "layer"  # "rms" in Qwen2.5-VL
    intermediate_size: int | None = None  # set: a gated MLP of this width (Qwen2.5-VL)
    window_size: int = 0  # pixels per attention window's side; 0: whole images only
    full_attention_blocks: tuple[int, ...] = ()  # blocks that see the whole image anyway
    tokens_per_second: int = 0  # video time positions a second (Qwen2.5-VL); 0: one a frame pair

    @classmethod
    def from_hf(cls, cfg: dict, hidden_size: int) -> VisionConfig:
        """Qwen2-VL's ``vision_config``."""
        return cls(
            embed_dim=cfg["embed_dim"],
            hidden_size=cfg.get("hidden_size", hidden_size),
            mlp_ratio=cfg.get("mlp_ratio", 4.0),
            hidden_act=cfg.get("hidden_act", "quick_gelu"),
            **_patching(cfg),
        )

    @classmethod
    def from_hf_2_5(cls, cfg: dict) -> VisionConfig:
        """Qwen2.5-VL's ``vision_config`` (its ``hidden_size`` is the ViT's own width)."""
        return cls(
            embed_dim=cfg["hidden_size"],
            hidden_size=cfg["out_hidden_size"],
            hidden_act=cfg.get("hidden_act", "silu"),
            **_patching(cfg),
            norm="rms",
            intermediate_size=cfg["intermediate_size"],
            window_size=cfg.get("window_size", 112),
            full_attention_blocks=tuple(cfg.get("fullatt_block_indexes", ())),
            tokens_per_second=cfg.get("tokens_per_second", 4),
        )

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size**2


def _patching(cfg: dict) -> dict:
    """The ``vision_config`` entries both generations name alike: depth, heads, patching."""
    rope = cfg.get("rope_parameters") or {}
    return dict(
        depth=cfg["depth"],
        num_heads=cfg["num_heads"],
        patch_size=cfg.get("patch_size", 14),
        temporal_patch_size=cfg.get("temporal_patch_size", 2),
        spatial_merge_size=cfg.get("spatial_merge_size", 2),
        in_channels=cfg.get("in_channels", 3),
        rope_theta=float(rope.get("rope_theta", 10000.0)),
    )


_ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        kernel = (cfg.temporal_patch_size, cfg.patch_size, cfg.patch_size)
        self.proj = nn.Conv3d(cfg.in_channels, cfg.embed_dim, kernel, stride=kernel, bias=False)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        x = patches.view(-1, c.in_channels, c.temporal_patch_size, c.patch_size, c.patch_size)
        # a conv whose kernel covers its whole input is a matmul over the flattened patch
        weight = self.proj.weight.reshape(c.embed_dim, -1)
        return x.reshape(x.shape[0], -1).to(weight.dtype) @ weight.T


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=True)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor, cos, sin, lengths: list[int]) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv(x).view(n, 3, self.num_heads, -1).permute(1, 2, 0, 3).unbind(0)
        q = apply_rope(q.float(), cos, sin).to(v.dtype)
        k = apply_rope(k.float(), cos, sin).to(v.dtype)
        out = torch.cat(  # 4-D, so PyTorch's CPU flash kernel takes it (3-D runs the math path)
            [
                F.scaled_dot_product_attention(qi[None], ki[None], vi[None])[0]
                for qi, ki, vi in zip(
                    q.split(lengths, 1), k.split(lengths, 1), v.split(lengths, 1), strict=True
                )
            ],
            dim=1,
        )
        return self.proj(out.transpose(0, 1).reshape(n, -1))


class VisionMlp(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.embed_dim, hidden)
        self.fc2 = nn.Linear(hidden, cfg.embed_dim)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GatedVisionMlp(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.embed_dim, cfg.intermediate_size)
        self.up_proj = nn.Linear(cfg.embed_dim, cfg.intermediate_size)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.embed_dim)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


def _norm(cfg: VisionConfig, dim: int) -> nn.Module:
    return RMSNorm(dim, 1e-6) if cfg.norm == "rms" else nn.LayerNorm(dim, eps=1e-6)


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = _norm(cfg, cfg.embed_dim)
        self.norm2 = _norm(cfg, cfg.embed_dim)
        self.attn = VisionAttention(cfg)
        self.mlp = GatedVisionMlp(cfg) if cfg.intermediate_size else VisionMlp(cfg)

    def forward(self, x, cos, sin, lengths: list[int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, lengths)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.merged_dim = cfg.embed_dim * cfg.spatial_merge_size**2
        self.ln_q = _norm(cfg, cfg.embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(self.merged_dim, self.merged_dim),
            nn.GELU(),
            nn.Linear(self.merged_dim, cfg.hidden_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).view(-1, self.merged_dim))


def patch_positions(grid: tuple[int, int, int], merge: int) -> torch.Tensor:
    """(patches, 2) row and column of each patch, in the processor's merge-block order."""
    t, h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    block = (h // merge, merge, w // merge, merge)
    rows = rows.reshape(block).transpose(1, 2).flatten()
    cols = cols.reshape(block).transpose(1, 2).flatten()
    return torch.stack([rows, cols], dim=-1).repeat(t, 1)


def window_order(
    grids: list[tuple[int, int, int]], cfg: VisionConfig
) -> tuple[torch.Tensor, list[int]]:
    """Qwen2.5-VL's windows: the merge blocks of every image (and frame) in window-by-window
    order, and each window's length in patches. Windows tile the merged grid from its top-left
    corner; those on the right and bottom edges are cut short."""
    side = cfg.window_size // cfg.spatial_merge_size // cfg.patch_size
    unit = cfg.spatial_merge_size**2
    order, lengths, offset = [], [], 0
    for t, h, w in grids:
        rows, cols = h // cfg.spatial_merge_size, w // cfg.spatial_merge_size
        blocks = torch.arange(t * rows * cols).view(t, rows, cols)
        for frame in blocks:
            for top in range(0, rows, side):
                for left in range(0, cols, side):
                    window = frame[top : top + side, left : left + side].flatten()
                    order.append(window + offset)
                    lengths.append(window.numel() * unit)
        offset += t * rows * cols
    return torch.cat(order), lengths


def _by_block(x: torch.Tensor, order: torch.Tensor, unit: int) -> torch.Tensor:
    """Rows of ``x`` regrouped by merge block in ``order``."""
    return x.view(-1, unit, x.shape[-1])[order].view(x.shape)


class Qwen2VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg)

    def rotary(self, grids: list[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (patches, head_dim): rows rotate the first quarter pair, columns the second;
        the frequencies in fp32 whatever the weights' dtype."""
        merge, head_dim = self.cfg.spatial_merge_size, self.cfg.embed_dim // self.cfg.num_heads
        quarter = torch.arange(0, head_dim // 2, 2, dtype=torch.float32) / (head_dim // 2)
        inv_freq = 1.0 / self.cfg.rope_theta**quarter
        positions = torch.cat([patch_positions(g, merge) for g in grids]).float()
        angles = (positions[..., None] * inv_freq).flatten(1)  # (N, head_dim / 2)
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos()[None], angles.sin()[None]

    @torch.inference_mode()
    def forward(self, patches: torch.Tensor, grids: list[tuple[int, int, int]]) -> torch.Tensor:
        """Patches (N, patch_dim) of the images in ``grids`` → merged tokens (N / 4, hidden)."""
        dtype = self.merger.ln_q.weight.dtype
        x = self.patch_embed(patches).to(dtype)
        cos, sin = self.rotary(grids)
        whole = [h * w for t, h, w in grids for _ in range(t)]
        if not self.cfg.window_size:
            for block in self.blocks:
                x = block(x, cos, sin, whole)
            return self.merger(x)
        unit = self.cfg.spatial_merge_size**2
        order, windows = window_order(grids, self.cfg)
        x = _by_block(x, order, unit)
        cos, sin = _by_block(cos[0], order, unit)[None], _by_block(sin[0], order, unit)[None]
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, whole if i in self.cfg.full_attention_blocks else windows)
        return self.merger(x)[torch.argsort(order)]
