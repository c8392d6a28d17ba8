"""LLaVA (1.5 and its kind): CLIP's vision transformer, a two-layer MLP projector, and a decoder.

The vision tower's hidden state at ``vision_feature_layer`` (-2 for LLaVA-1.5; a list of
layers is concatenated) loses its class position under the ``default`` selection strategy and
goes through ``linear_1`` → activation → ``linear_2`` into the decoder's width; each of its
vectors replaces one ``<image>`` placeholder. The decoder is the text config's Llama, Mistral or
Qwen2 with 1-D RoPE. Both weight layouts load: the older ``language_model.model.*`` /
``vision_tower.vision_model.*`` / ``multi_modal_projector.*`` and the current
``model.language_model.*`` / ``model.vision_tower.*`` / ``model.multi_modal_projector.*`` with a
top-level ``lm_head``.
The chat templates take list content and write ``<image>`` where an image goes; the
tokenizer's own BOS comes first where the template does not write it, as the processor adds it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.encoders.clip import ClipVisionTransformer
from omniloom.models.encoders.siglip import ACTIVATIONS, SiglipConfig
from omniloom.models.multimodal import MultimodalModel
from omniloom.models.specs.base import (
    SpecContext,
    assemble,
    build_decoder,
    split_by_prefix,
    strict_load,
)
from omniloom.models.tokenizer import TextTokenizer
from omniloom.models.weights.hf_loader import read_config, read_tokenizer, read_weights
from omniloom.processing.clip_image import (
    ClipImage,
    ClipImageProcessor,
    ClipImageSettings,
    ClipTokens,
)

ARCHITECTURES = ("LlavaForConditionalGeneration",)
IMAGE_MARKER = "<image>"
# what ``transformers`` fills in where a LLaVA config leaves keys out
LLAVA_VISION_DEFAULTS = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    layer_norm_eps=1e-5,
    hidden_act="quick_gelu",
)
LLAMA_DEFAULTS = dict(
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
)
TEXT_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}
_WEIGHT_PREFIXES = (  # checkpoint prefix → (part, our prefix); the first match wins
    ("language_model.lm_head.", "decoder", "lm_head."),
    ("language_model.model.", "decoder", "model."),
    ("model.language_model.", "decoder", "model."),
    ("vision_tower.vision_model.", "vision", ""),
    ("model.vision_tower.vision_model.", "vision", ""),
    ("vision_tower.", "vision", ""),
    ("model.vision_tower.", "vision", ""),
    ("multi_modal_projector.", "projector", ""),
    ("model.multi_modal_projector.", "projector", ""),
    ("model.image_newline", "newline", "image_newline"),  # LLaVA-OneVision's row end
    ("image_newline", "newline", "image_newline"),
)


def decoder_config(raw: dict, default_type: str = "llama") -> DecoderConfig:
    """The text config's decoder; keys it leaves out take ``transformers``' Llama defaults."""
    text = raw.get("text_config") or {}
    model_type = text.get("model_type", default_type)
    if model_type not in TEXT_ARCHITECTURES:
        known = ", ".join(TEXT_ARCHITECTURES)
        raise ValueError(f"LLaVA with a {model_type!r} decoder is not supported; known: {known}")
    defaults = LLAMA_DEFAULTS if model_type == "llama" else {}
    text = defaults | text | {"architectures": [TEXT_ARCHITECTURES[model_type]]}
    text["tie_word_embeddings"] = raw.get("tie_word_embeddings", False)
    return DecoderConfig.from_hf(text)


def vision_config(raw: dict) -> SiglipConfig:
    vision = raw.get("vision_config") or {}
    if vision.get("model_type", "clip_vision_model") != "clip_vision_model":
        raise ValueError(f"LLaVA with a {vision['model_type']!r} vision tower is not supported")
    return SiglipConfig.from_hf(vision, LLAVA_VISION_DEFAULTS)


def split_weights(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The checkpoint's tensors as {"decoder", "vision", "projector", "newline"}, under our
    names."""
    return split_by_prefix(state, _WEIGHT_PREFIXES, ("decoder", "vision", "projector", "newline"))


class LlavaProjector(nn.Module):
    def __init__(self, vision_width: int, text_width: int, activation: str, bias: bool):
        super().__init__()
        self.linear_1 = nn.Linear(vision_width, text_width, bias=bias)
        self.linear_2 = nn.Linear(text_width, text_width, bias=bias)
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class LlavaModel(MultimodalModel):
    modalities = frozenset({"text", "image"})

    def __init__(self, backbone, vision, projector, image_token: int, layers, keep_cls: bool):
        super().__init__(backbone)
        self.vision = vision
        self.projector = projector
        self.image_token = image_token
        self.feature_layers = tuple(layers)
        self.keep_cls = keep_cls

    def placeholder_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return ids == self.image_token

    def encode(self, items: list[ClipImage]) -> list[torch.Tensor]:
        """Every image through the tower in one batch."""
        if not items:
            return []
        dtype = self.vision.pre_layrnorm.weight.dtype
        pixels = torch.stack([item.pixels() for item in items]).to(self.device, dtype)
        states = self.vision.hidden_states(pixels, self.feature_layers)
        start = 0 if self.keep_cls else 1
        features = torch.cat([state[:, start:] for state in states], dim=-1)
        return list(self.projector(features).to(self.dtype).unbind(0))


def keeps_class_position(raw: dict) -> bool:
    """Whether the tower's class position reaches the decoder (``full``) or is dropped."""
    return raw.get("vision_feature_select_strategy", "default") == "full"


def feature_layers(raw: dict, default: int) -> list[int]:
    layers = raw.get("vision_feature_layer", default)
    return [layers] if isinstance(layers, int) else list(layers)


def load_projector(raw: dict, vision_width: int, text_width: int, weights, ctx) -> LlavaProjector:
    activation = raw.get("projector_hidden_act", "gelu")
    bias = raw.get("multimodal_projector_bias", True)
    build = lambda: LlavaProjector(vision_width, text_width, activation, bias)  # noqa: E731
    return strict_load(build, weights, ctx)


def image_token_id(raw: dict, tokenizer: TextTokenizer) -> int:
    token = raw.get("image_token_id", raw.get("image_token_index"))
    return tokenizer.token_id(IMAGE_MARKER) if token is None else token


def image_processor(
    directory: Path, raw: dict | None = None, tokenizer: TextTokenizer | None = None
) -> ClipImageProcessor:
    """The checkpoint's image processor alone (no weights read)."""
    raw = raw or read_config(directory)
    tokenizer = tokenizer or TextTokenizer(read_tokenizer(directory, raw))
    per_image = vision_config(raw).patches_per_side ** 2 + int(keeps_class_position(raw))
    tokens = ClipTokens(image_token_id(raw, tokenizer), per_image)
    return ClipImageProcessor(ClipImageSettings.from_directory(directory), tokens)


def load(directory: Path, ctx: SpecContext):
    raw = read_config(directory)
    tokenizer_spec = read_tokenizer(directory, raw)
    tokenizer = TextTokenizer(tokenizer_spec)
    weights = split_weights(read_weights(directory))
    cfg = decoder_config(raw)
    backbone = build_decoder(cfg, weights["decoder"], ctx)
    vision_cfg = vision_config(raw)
    vision = strict_load(lambda: ClipVisionTransformer(vision_cfg), weights["vision"], ctx)
    layers = feature_layers(raw, -2)
    width = vision_cfg.hidden_size * len(layers)
    projector = load_projector(raw, width, cfg.hidden_size, weights["projector"], ctx)
    processor = image_processor(directory, raw, tokenizer)
    keep_cls = keeps_class_position(raw)
    return assemble(
        directory,
        ctx,
        LlavaModel(backbone, vision, projector, processor.tokens.image, layers, keep_cls),
        tokenizer_spec,
        cfg,
        "llava",
        processors={"image": processor},
        tokenizer=tokenizer,
        media_markers={"image": IMAGE_MARKER},
    )
