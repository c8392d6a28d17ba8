"""Qwen2-VL: a native-resolution ViT, a 2×2 patch merger and a Qwen2 decoder with M-RoPE.

The checkpoint's ``visual.*`` weights load into ``Qwen2VisionTransformer``, its ``model.*`` and
``lm_head`` into our decoder (``transformers`` 5 also writes ``model.language_model.*`` and
``model.visual.*``; both namings load). Each image is one span ``<|vision_start|>
<|image_pad|>×N <|vision_end|>``; its placeholders take the merger's output. Positions follow
M-RoPE: text advances all three axes together, an image's tokens sit at (start, start + row,
start + column) of its merged grid, and the text after it resumes at start + max(rows, cols).
A video is one span of ``<|video_pad|>`` whose time axis counts its frame pairs (Qwen2.5-VL:
``tokens_per_second`` steps a second of video); the text after it resumes as after an image.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.encoders.qwen2_vl_vit import Qwen2VisionTransformer, VisionConfig
from omniloom.models.multimodal import MultimodalModel
from omniloom.models.specs.base import SpecContext, assemble, build_decoder, strict_load
from omniloom.models.weights.hf_loader import read_config, read_tokenizer, read_weights
from omniloom.processing.prompt import Prompt
from omniloom.processing.qwen2_vl import (
    Qwen2VLImage,
    Qwen2VLImageProcessor,
    Qwen2VLImageSettings,
    Qwen2VLTokens,
    Qwen2VLVideoProcessor,
)

ARCHITECTURES = ("Qwen2VLForConditionalGeneration",)
_DEFAULT_MROPE = (16, 24, 24)


def decoder_config(raw: dict) -> DecoderConfig:
    """The language model's config: ``text_config`` where nested, M-RoPE's sections."""
    text = {**raw, **(raw.get("text_config") or {})}
    rope = text.pop("rope_scaling", None) or text.get("rope_parameters") or {}
    text["architectures"] = ["Qwen2ForCausalLM"]
    text["tie_word_embeddings"] = raw.get("tie_word_embeddings", False)
    sections = tuple(rope.get("mrope_section") or _DEFAULT_MROPE)
    return replace(DecoderConfig.from_hf(text), mrope_section=sections)


def split_weights(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(decoder weights under our names, vision weights under ``Qwen2VisionTransformer``'s)."""
    decoder, vision = {}, {}
    for key, tensor in state.items():
        key = key.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
        if key.startswith("visual."):
            vision[key.removeprefix("visual.")] = tensor
        else:
            decoder[key] = tensor
    return decoder, vision


class Qwen2VLModel(MultimodalModel):
    modalities = frozenset({"text", "image", "video"})

    def __init__(self, backbone, visual: Qwen2VisionTransformer, tokens: Qwen2VLTokens):
        super().__init__(backbone)
        self.visual = visual
        self.tokens = tokens

    def placeholder_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids == self.tokens.image_pad) | (ids == self.tokens.video_pad)

    def encode(self, items: list[Qwen2VLImage]) -> list[torch.Tensor]:
        """All images through the ViT in one call (attention stays within each image)."""
        if not items:
            return []
        dtype = self.visual.merger.ln_q.weight.dtype
        patches = torch.cat([item.patches() for item in items]).to(self.device, dtype)
        merged = self.visual(patches, [item.grid for item in items])
        return list(merged.to(self.dtype).split([item.num_placeholders() for item in items]))

    def prompt_positions(self, prompt: Prompt) -> torch.Tensor:
        """(3, T) M-RoPE positions: text on the diagonal, images on their merged grid."""
        merge = self.visual.cfg.spatial_merge_size
        pieces, cursor, position = [], 0, 0
        for span in prompt.spans:
            first_pad = span.start + 1  # after <|vision_start|>
            pieces.append(torch.arange(first_pad - cursor).expand(3, -1) + position)
            position += first_pad - cursor
            t, h, w = span.item.grid
            grid = torch.stack(
                torch.meshgrid(
                    self.time_positions(t, span.item.seconds_per_grid),
                    torch.arange(h // merge),
                    torch.arange(w // merge),
                    indexing="ij",
                )
            ).reshape(3, -1)
            pieces.append(grid + position)
            position += max(h, w) // merge
            cursor = first_pad + grid.shape[1]
        pieces.append(torch.arange(len(prompt.token_ids) - cursor).expand(3, -1) + position)
        return torch.cat(pieces, dim=1)

    def time_positions(self, pairs: int, seconds_per_grid: float) -> torch.Tensor:
        """The time axis of each frame pair: its index, or (Qwen2.5-VL, for video) its start
        in seconds times ``tokens_per_second``, truncated as ``transformers`` does in fp32."""
        per_second = self.visual.cfg.tokens_per_second
        if not per_second or not seconds_per_grid:
            return torch.arange(pairs)
        step = per_second * torch.tensor(seconds_per_grid, dtype=torch.float32)
        return (torch.arange(pairs) * step).long()


def load(directory: Path, ctx: SpecContext):
    return load_family(
        directory, ctx, "qwen2-vl", lambda raw, cfg: VisionConfig.from_hf(raw, cfg.hidden_size)
    )


def load_family(directory: Path, ctx: SpecContext, family: str, vision_config):
    """A Qwen2-VL-lineage checkpoint whose ViT ``vision_config(raw vision_config, decoder
    config)`` describes."""
    raw = read_config(directory)
    tokenizer_spec = read_tokenizer(directory, raw)
    decoder_weights, vision_weights = split_weights(read_weights(directory))
    cfg = decoder_config(raw)
    backbone = build_decoder(cfg, decoder_weights, ctx)
    vision_cfg = vision_config(raw["vision_config"], cfg)
    visual = strict_load(lambda: Qwen2VisionTransformer(vision_cfg), vision_weights, ctx)
    processor = image_processor(directory, raw)
    net = Qwen2VLModel(backbone, visual, processor.tokens)
    processors = {"image": processor, "video": video_processor(directory, raw)}
    return assemble(directory, ctx, net, tokenizer_spec, cfg, family, processors=processors)


def image_processor(directory: Path, raw: dict | None = None) -> Qwen2VLImageProcessor:
    """The checkpoint's image processor alone (no weights read)."""
    raw = raw or read_config(directory)
    tokens = Qwen2VLTokens(
        vision_start=raw.get("vision_start_token_id", 151652),
        vision_end=raw.get("vision_end_token_id", 151653),
        image_pad=raw.get("image_token_id", 151655),
        video_pad=raw.get("video_token_id", 151656),
    )
    return Qwen2VLImageProcessor(Qwen2VLImageSettings.from_directory(directory), tokens)


def video_processor(directory: Path, raw: dict | None = None) -> Qwen2VLVideoProcessor:
    """The checkpoint's video processor alone (no weights read)."""
    tokens = image_processor(directory, raw).tokens
    return Qwen2VLVideoProcessor(Qwen2VLImageSettings.video_from_directory(directory), tokens)
