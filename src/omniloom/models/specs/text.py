"""Text-only decoders: Llama, Qwen2, Qwen3 and Mistral, from a Hugging Face directory or a GGUF file.

They serve text alone: a request with media gets a 400 that names the modality and the model.
"""

from __future__ import annotations

from pathlib import Path

from omniloom.models.backbones.config import HF_ARCHITECTURES
from omniloom.models.multimodal import MultimodalModel
from omniloom.models.specs.base import SpecContext, assemble, build_decoder
from omniloom.models.weight_cache import gguf_decoder
from omniloom.models.weights.hf_loader import load_hf_directory

ARCHITECTURES = HF_ARCHITECTURES
GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3")


def load(path: Path, ctx: SpecContext):
    if path.is_dir():
        ckpt = load_hf_directory(path)
        backbone = build_decoder(ckpt.config, ckpt.state_dict, ctx)
    else:
        ckpt, backbone = gguf_decoder(path, ctx)
    family = "text"
    return assemble(
        path,
        ctx,
        MultimodalModel(backbone),
        ckpt.tokenizer,
        ckpt.config,
        family,
        license=ckpt.license,
    )
