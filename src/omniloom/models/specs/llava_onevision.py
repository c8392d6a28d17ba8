"""LLaVA-OneVision: SigLIP on an "anyres" grid of views, LLaVA's MLP projector, and a Qwen2 decoder.

Every view of every image goes through SigLIP (its own position ids) in one batch; the last
block's hidden state (``vision_feature_layer`` -1, before the final LayerNorm) keeps every
patch (``full``) and is projected as in LLaVA (``specs/llava.py`` supplies the projector, the
weight names and the decoder config). An image's vectors are then packed as the model does
it: the whole-image view's, then the grid's as one feature map with the padding cut away,
shrunk bilinearly past ``anyres_max_N`` views' worth, with the learned ``image_newline``
vector closing every row; in a prompt with several images each is one padded view and one
newline (``processing/llava_onevision.py`` lays this out and counts it).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from omniloom.models.encoders.siglip import SiglipConfig, SiglipVisionTransformer
from omniloom.models.specs.base import SpecContext, assemble, build_decoder, strict_load
from omniloom.models.specs.llava import (
    IMAGE_MARKER,
    LlavaModel,
    decoder_config,
    feature_layers,
    image_token_id,
    load_projector,
    split_weights,
)
from omniloom.models.tokenizer import TextTokenizer
from omniloom.models.weights.hf_loader import read_config, read_tokenizer, read_weights
from omniloom.processing.llava_onevision import (
    SINGLE_VIEW,
    OnevisionImage,
    OnevisionImageProcessor,
    OnevisionSettings,
)

ARCHITECTURES = ("LlavaOnevisionForConditionalGeneration",)
# what ``transformers`` fills in where a LLaVA-OneVision config leaves keys out
SIGLIP_DEFAULTS = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=26,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    layer_norm_eps=1e-6,
    hidden_act="gelu_pytorch_tanh",
)


def vision_config(raw: dict) -> SiglipConfig:
    vision = raw.get("vision_config") or {}
    if vision.get("model_type", "siglip_vision_model") != "siglip_vision_model":
        raise ValueError(f"LLaVA-OneVision with a {vision['model_type']!r} tower is not supported")
    if raw.get("vision_feature_select_strategy", "full") != "full":
        raise ValueError("LLaVA-OneVision is supported with vision_feature_select_strategy 'full'")
    return SiglipConfig.from_hf(vision, SIGLIP_DEFAULTS)


class OnevisionModel(LlavaModel):
    """LLaVA's model with every patch kept and images packed as OneVision lays them out."""

    def __init__(self, backbone, vision, projector, newline, image_token: int, layers):
        super().__init__(backbone, vision, projector, image_token, layers, keep_cls=True)
        self.image_newline = newline

    def encode(self, items: list[OnevisionImage]) -> list[torch.Tensor]:
        """Every view of every image through SigLIP in one batch, then packed per image."""
        if not items:
            return []
        dtype = self.vision.post_layernorm.weight.dtype
        views = torch.cat([item.views() for item in items]).to(self.device, dtype)
        states = self.vision.hidden_states(views, self.feature_layers)
        features = self.projector(torch.cat(states, dim=-1))
        per_item = features.split([item.layout.views for item in items])
        return [
            self._packed(item, f).to(self.dtype) for item, f in zip(items, per_item, strict=True)
        ]

    def _packed(self, item: OnevisionImage, features: torch.Tensor) -> torch.Tensor:
        """(placeholders, hidden): the whole view, then the grid's rows, each ending in a newline."""
        newline = self.image_newline.to(features.dtype)
        if item.layout is SINGLE_VIEW:
            return torch.cat([features[0], newline[None]])
        side, (rows, cols) = item.per_side, item.layout.grid
        grid = features[1:].view(rows, cols, side, side, -1).permute(4, 0, 2, 1, 3)
        grid = grid.flatten(1, 2).flatten(2, 3)  # (hidden, rows · side, cols · side)
        height, width = item.layout.unpadded
        top, left = (grid.shape[1] - height) // 2, (grid.shape[2] - width) // 2
        grid = grid[:, top : top + height, left : left + width]
        if item.layout.shrunk:
            grid = F.interpolate(grid[None], list(item.layout.shrunk), mode="bilinear")[0]
        ends = newline[:, None, None].expand(*grid.shape[:-1], 1)
        grid = torch.cat([grid, ends], dim=-1).flatten(1, 2).transpose(0, 1)
        return torch.cat([features[0], grid])


def image_processor(
    directory: Path, raw: dict | None = None, tokenizer: TextTokenizer | None = None
) -> OnevisionImageProcessor:
    """The checkpoint's image processor alone (no weights read)."""
    raw = raw or read_config(directory)
    tokenizer = tokenizer or TextTokenizer(read_tokenizer(directory, raw))
    aspect_ratio = raw.get("vision_aspect_ratio", "anyres_max_9")
    settings = OnevisionSettings.from_directory(directory, aspect_ratio)
    per_side = vision_config(raw).patches_per_side
    return OnevisionImageProcessor(settings, image_token_id(raw, tokenizer), per_side)


def load(directory: Path, ctx: SpecContext):
    raw = read_config(directory)
    tokenizer_spec = read_tokenizer(directory, raw)
    tokenizer = TextTokenizer(tokenizer_spec)
    weights = split_weights(read_weights(directory))
    cfg = decoder_config(raw, default_type="qwen2")
    backbone = build_decoder(cfg, weights["decoder"], ctx)
    vision_cfg = vision_config(raw)
    # the attention-pooling head of SigLIP checkpoints that have one is not used by LLaVA
    tower = {k: v for k, v in weights["vision"].items() if not k.startswith("head.")}
    vision = strict_load(lambda: SiglipVisionTransformer(vision_cfg, bucketed=False), tower, ctx)
    layers = feature_layers(raw, -1)
    width = vision_cfg.hidden_size * len(layers)
    projector = load_projector(raw, width, cfg.hidden_size, weights["projector"], ctx)
    dtype = vision.post_layernorm.weight.dtype
    newline = weights["newline"]["image_newline"].to(ctx.device, dtype)
    processor = image_processor(directory, raw, tokenizer)
    image_token = processor.image_token
    return assemble(
        directory,
        ctx,
        OnevisionModel(backbone, vision, projector, newline, image_token, layers),
        tokenizer_spec,
        cfg,
        "llava-onevision",
        processors={"image": processor},
        tokenizer=tokenizer,
        media_markers={"image": IMAGE_MARKER},
    )
