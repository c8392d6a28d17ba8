"""Which model serves: the embedded default, or the spec a checkpoint's own metadata names.

``load_model`` with no path assembles ``omniloom-smol`` (``specs/omniloom_smol.py``). Given a
path, it reads the checkpoint's architecture — ``architectures`` in a Hugging Face
``config.json``, ``general.architecture`` in a GGUF file — and hands it to that family's spec
in ``models/specs/``. Adding a family is a new spec module and a line in ``_HF_SPECS`` or
``_GGUF_SPECS``.
"""

from __future__ import annotations

import json
from pathlib import Path

from gguf import GGUFReader

from omniloom import kernels
from omniloom.models.default_layout import (
    ADAPTER,
    adapter_layout,
    build_tile_layout,
    default_tile_layout,
    trained_on_descriptions,
)
from omniloom.models.specs import (
    gemma3,
    idefics3,
    llava,
    llava_onevision,
    qwen2_5_vl,
    qwen2_audio,
    qwen2_vl,
    text,
)
from omniloom.models.specs.base import (
    LoadedModel,
    SpecContext,
    build_decoder,
    resolve_weight_format,
)
from omniloom.models.specs.omniloom_smol import (
    DEFAULT_MODEL,
    smollm2_gguf_path,
    use_tile_layout,
)
from omniloom.models.specs.omniloom_smol import load as load_default
from omniloom.models.weights.gguf_loader import load_gguf
from omniloom.models.weights.hf_loader import load_hf_directory
from omniloom.processing.video_frames import FramesAsImages

__all__ = [
    "ADAPTER",
    "DEFAULT_MODEL",
    "LoadedModel",
    "adapter_layout",
    "build_backbone",
    "build_tile_layout",
    "default_tile_layout",
    "load_image_processor",
    "load_model",
    "smollm2_gguf_path",
    "trained_on_descriptions",
    "use_tile_layout",
]

_HF_SPECS = {
    arch: spec
    for spec in (text, gemma3, qwen2_vl, qwen2_5_vl, idefics3, llava, llava_onevision, qwen2_audio)
    for arch in spec.ARCHITECTURES
}
_GGUF_SPECS = {arch: spec for spec in (text, gemma3) for arch in spec.GGUF_ARCHITECTURES}


def architecture(path: Path) -> str:
    """The architecture a checkpoint names for itself."""
    if path.is_dir():
        config = path / "config.json"
        if not config.exists():
            raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face checkpoint")
        return (json.loads(config.read_text()).get("architectures") or ["LlamaForCausalLM"])[0]
    field = GGUFReader(str(path)).get_field("general.architecture")
    if field is None:
        raise ValueError(f"{path} has no general.architecture: not a GGUF model")
    return field.contents()


def spec_for(path: Path):
    arch = architecture(path)
    specs = _HF_SPECS if path.is_dir() else _GGUF_SPECS
    if arch not in specs:
        known = ", ".join(sorted(specs))
        raise ValueError(f"{path}: architecture {arch!r} is not supported; supported: {known}")
    return specs[arch]


def load_image_processor(path: str | Path):
    """The image processor of the checkpoint at ``path``, its weights left unread; None for a
    model without image input."""
    make = getattr(spec_for(Path(path)), "image_processor", None)
    return make(Path(path)) if make else None


def load_video_processor(path: str | Path):
    """The video processor of the checkpoint at ``path`` (its own, else its image processor's
    frames as timed images), its weights left unread; None for a model that sees neither."""
    make = getattr(spec_for(Path(path)), "video_processor", None)
    if make:
        return make(Path(path))
    images = load_image_processor(path)
    return FramesAsImages(images) if images else None


def load_checkpoint(path: str | Path):
    """A text decoder's checkpoint (config, weights, tokenizer) from either format."""
    path = Path(path)
    return load_hf_directory(path) if path.is_dir() else load_gguf(path)


def build_backbone(ckpt, device: str = "cpu"):
    """A checkpoint's decoder alone, fp32 (parity tests, benchmarks)."""
    return build_decoder(ckpt.config, dict(ckpt.state_dict), SpecContext(device=device))


def load_model(
    name: str | None = None,
    weights: str | Path | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    fresh_adapter: bool = False,
    adapter_path: Path = ADAPTER,
    chat_template: str | None = None,
    cache_dir: Path | None = None,
) -> LoadedModel:
    """The model at ``weights`` (a checkpoint directory or GGUF file) through its family's
    spec, or the embedded default. ``name`` is the name it serves under; converted GGUF
    weights are cached under ``cache_dir`` (None: converted on every load)."""
    if device == "cpu":
        kernels.load()  # compiled once per machine; PyTorch's operators if it cannot be
    ctx = SpecContext(name, resolve_weight_format(dtype, device), device, chat_template, cache_dir)
    if weights is None:
        return load_default(ctx, fresh_adapter, adapter_path)
    path = Path(weights)
    return spec_for(path).load(path, ctx)
