"""Idefics3 and SmolVLM: SigLIP on square tiles, a pixel-shuffle connector and a Llama decoder.

The checkpoint's ``model.vision_model.*`` weights load into ``SiglipVisionTransformer``,
``model.connector.*`` into ``PixelShuffleConnector`` and ``model.text_model.*`` with
``lm_head`` into our decoder (1-D RoPE). An image is a grid of tiles plus a global view
(``processing/idefics3.py``); every view gives ``image_seq_len`` vectors that replace its
``<image>`` placeholders. The chat templates take list content and write ``<image>`` where
an image goes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.encoders.siglip import (
    PixelShuffleConnector,
    SiglipConfig,
    SiglipVisionTransformer,
)
from omniloom.models.multimodal import MultimodalModel
from omniloom.models.specs.base import SpecContext, assemble, build_decoder, strict_load
from omniloom.models.tokenizer import TextTokenizer
from omniloom.models.weights.hf_loader import read_config, read_tokenizer, read_weights
from omniloom.processing.idefics3 import (
    Idefics3Image,
    Idefics3ImageProcessor,
    Idefics3ImageSettings,
    Idefics3Tokens,
)

ARCHITECTURES = ("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration")
IMAGE_MARKER = "<image>"


def decoder_config(raw: dict) -> DecoderConfig:
    text = {**(raw.get("text_config") or {}), "architectures": ["LlamaForCausalLM"]}
    text["tie_word_embeddings"] = raw.get("tie_word_embeddings", False)
    return DecoderConfig.from_hf(text)


def split_weights(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(decoder weights under our names, vision transformer's, connector's)."""
    decoder, vision, connector = {}, {}, {}
    for key, tensor in state.items():
        if key.startswith("model.vision_model."):
            vision[key.removeprefix("model.vision_model.")] = tensor
        elif key.startswith("model.connector."):
            connector[key.removeprefix("model.connector.")] = tensor
        else:
            decoder[key.replace("model.text_model.", "model.")] = tensor
    return decoder, vision, connector


class Idefics3Model(MultimodalModel):
    modalities = frozenset({"text", "image"})

    def __init__(self, backbone, vision: SiglipVisionTransformer, connector, image_token: int):
        super().__init__(backbone)
        self.vision = vision
        self.connector = connector
        self.image_token = image_token

    def placeholder_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return ids == self.image_token

    def encode(self, items: list[Idefics3Image]) -> list[torch.Tensor]:
        """Every view of every image through the encoder in one batch."""
        if not items:
            return []
        dtype = self.vision.post_layernorm.weight.dtype
        views = torch.cat([item.views() for item in items]).to(self.device, dtype)
        features = self.connector(self.vision(views))
        per_item = [item.layout.views for item in items]
        return [f.reshape(-1, f.shape[-1]).to(self.dtype) for f in features.split(per_item)]


def image_processor(
    directory: Path, raw: dict | None = None, tokenizer: TextTokenizer | None = None
) -> Idefics3ImageProcessor:
    """The checkpoint's image processor alone (no weights read)."""
    raw = raw or read_config(directory)
    tokenizer = tokenizer or TextTokenizer(read_tokenizer(directory, raw))
    vision_cfg = SiglipConfig.from_hf(raw.get("vision_config") or {})
    scale = raw.get("scale_factor", 2)
    image_token = raw.get("image_token_id") or tokenizer.token_id(IMAGE_MARKER)
    tokens = Idefics3Tokens.from_tokenizer(
        tokenizer, image_token, vision_cfg.patches_per_side**2 // scale**2
    )
    return Idefics3ImageProcessor(Idefics3ImageSettings.from_directory(directory), tokens)


def load(directory: Path, ctx: SpecContext):
    raw = read_config(directory)
    tokenizer_spec = read_tokenizer(directory, raw)
    tokenizer = TextTokenizer(tokenizer_spec)
    decoder_weights, vision_weights, connector_weights = split_weights(read_weights(directory))
    cfg = decoder_config(raw)
    backbone = build_decoder(cfg, decoder_weights, ctx)
    vision_cfg = SiglipConfig.from_hf(raw.get("vision_config") or {})
    scale = raw.get("scale_factor", 2)
    vision = strict_load(lambda: SiglipVisionTransformer(vision_cfg), vision_weights, ctx)
    connector = strict_load(
        lambda: PixelShuffleConnector(vision_cfg.hidden_size, cfg.hidden_size, scale),
        connector_weights,
        ctx,
    )
    processor = image_processor(directory, raw, tokenizer)
    return assemble(
        directory,
        ctx,
        Idefics3Model(backbone, vision, connector, processor.tokens.image),
        tokenizer_spec,
        cfg,
        "smolvlm" if raw.get("model_type") == "smolvlm" else "idefics3",
        processors={"image": processor},
        tokenizer=tokenizer,
        media_markers={"image": IMAGE_MARKER},
    )
