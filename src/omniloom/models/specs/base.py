"""What every model spec shares: the servable ``LoadedModel`` and the steps that build one.

A spec (one module per family in this package) reads a checkpoint and returns a
``LoadedModel``: the ``MultimodalModel`` the engine runs, the checkpoint's own tokenizer and
chat template, and one processor per media modality it serves (an object whose
``prepare(decoded, detail, image_settings)`` returns a ``MediaItem`` with its token span).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omniloom import kernels
from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.backbones.llama import LlamaForCausalLM
from omniloom.models.multimodal import MultimodalModel
from omniloom.models.quantize import WEIGHT_FORMATS, settle_dtypes
from omniloom.models.tokenizer import TextTokenizer
from omniloom.models.weights.checkpoint import TokenizerSpec
from omniloom.processing.template import ChatTemplate
from omniloom.processing.video_frames import FramesAsImages


@dataclass(frozen=True)
class SpecContext:
    """How the server wants the model: its served name, weight format, device, a chat template
    to use instead of the checkpoint's (``--chat-template``), and where converted weights are
    cached (``weight_cache.py``; None: converted on every load)."""

    name: str | None = None
    weight_format: str = "float32"
    device: str = "cpu"
    chat_template: str | None = None
    cache_dir: Path | None = None


@dataclass
class LoadedModel:
    name: str
    vlm: MultimodalModel
    tokenizer: TextTokenizer
    template: ChatTemplate | None  # None: the checkpoint has none (a base model)
    context_length: int
    family: str = "omniloom-smol"
    license: str | None = None
    processors: dict[str, Any] = field(default_factory=dict)  # modality → processor
    adapter_reads_descriptions: bool = False  # trained on the cascade's words: runs for them too
    familiarity_bank: torch.Tensor | None = None  # features of the adapter's training images
    why_text_only: str | None = None  # said when media are refused for a reason of its own
    cascade_encoder: nn.Module | None = None  # labels images for the perception cascade
    prefers_cascade_audio: bool = False  # its own audio path loses to the speech cascade

    @property
    def audio_path(self) -> str:
        """How audio parts reach this model unless a request says: ``native`` where it has an
        audio processor (and that path wins), else through speech recognition (``cascade``)."""
        native = "audio" in self.processors and not self.prefers_cascade_audio
        return "native" if native else "cascade"

    def __post_init__(self) -> None:
        """A model that sees images sees video as timed frames, unless its spec has a video
        processor of its own."""
        if "image" in self.processors and "video" not in self.processors:
            self.processors["video"] = FramesAsImages(self.processors["image"])

    @property
    def modalities(self) -> frozenset[str]:
        video = frozenset({"video"}) if "video" in self.processors else frozenset()
        return self.vlm.modalities | video

    @property
    def tile_layout(self):
        """The embedded default's image layout."""
        return self.vlm.tile_layout


def resolve_weight_format(name: str, device: str = "cpu") -> str:
    """``auto`` is int8 on a CPU where our kernels run vectorized (their int8 × int8 path decodes
    about 2.4× faster than fp32, with the suites' accuracy within a point; docs/performance.md),
    else fp32; any other name is a format."""
    if name == "auto":
        return "int8" if device == "cpu" and kernels.vectorized() else "float32"
    if name not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format {name!r}; choose from {', '.join(WEIGHT_FORMATS)}")
    return name


def build_decoder(
    cfg: DecoderConfig, weights: dict[str, torch.Tensor], ctx: SpecContext
) -> LlamaForCausalLM:
    """Our decoder with ``weights`` (HF ``LlamaForCausalLM`` names), packed as asked."""
    if cfg.tie_embeddings:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model.load_state_dict(weights, strict=True, assign=True)
    model.build_rotary()  # off meta
    if cfg.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    model = model.to(device=ctx.device).eval().requires_grad_(False)
    settle_dtypes(model, ctx.weight_format)  # activations stay fp32
    return model


def split_by_prefix(
    state: dict[str, torch.Tensor], prefixes: tuple[tuple[str, str, str], ...], parts: tuple
) -> dict[str, dict[str, torch.Tensor]]:
    """The checkpoint's tensors sorted into ``parts`` by ``prefixes`` ((checkpoint prefix, part,
    our prefix); the first match wins) and renamed; any other tensor is the decoder's."""
    out: dict[str, dict[str, torch.Tensor]] = {part: {} for part in parts}
    for key, tensor in state.items():
        for prefix, part, ours in prefixes:
            if key.startswith(prefix):
                out[part][ours + key.removeprefix(prefix)] = tensor
                break
        else:
            out["decoder"][key] = tensor
    return out


def strict_load(build: Callable[[], nn.Module], weights: dict[str, torch.Tensor], ctx: SpecContext):
    """The module ``build`` makes, holding exactly ``weights`` (names must match both ways),
    frozen, in fp32, or bf16 when the server runs bf16 weights. It is built without storage
    and takes the checkpoint's tensors as they are, so a bf16 encoder served in bf16 is never
    copied, and nothing is randomly initialised on the way."""
    with torch.device("meta"):
        module = build()
    module.load_state_dict(weights, strict=True, assign=True)
    dtype = torch.bfloat16 if ctx.weight_format == "bfloat16" else torch.float32
    return module.to(device=ctx.device, dtype=dtype).eval().requires_grad_(False)


def build_template(
    spec: TokenizerSpec,
    tokenizer: TextTokenizer,
    override: str | None = None,
    media_markers: dict[str, str] | None = None,
    processor_prefix: bool = False,
    typed_media: bool = False,
) -> ChatTemplate | None:
    """The chat template; with ``processor_prefix``, prompts are tokenized as the family's
    ``transformers`` processor does it (the tokenizer's BOS where the template writes none);
    with ``typed_media``, it is given list content even where it also takes strings."""
    source = override or spec.chat_template
    if not source:
        return None
    token = lambda i: tokenizer.id_to_token(i) if i is not None else ""  # noqa: E731
    return ChatTemplate(
        source,
        bos_token=token(spec.bos_id),
        eos_token=token(spec.eos_id),
        media_markers=media_markers,
        prompt_prefix=tuple(tokenizer.added_prefix_ids()) if processor_prefix else (),
        typed_parts=typed_media,
    )


def assemble(
    path: Path,
    ctx: SpecContext,
    net: MultimodalModel,
    tokenizer_spec: TokenizerSpec,
    cfg: DecoderConfig,
    family: str,
    processors: dict[str, Any] | None = None,
    license: str | None = None,
    tokenizer: TextTokenizer | None = None,
    media_markers: dict[str, str] | None = None,
    typed_media: bool = False,
) -> LoadedModel:
    """The servable model; ``media_markers`` name what a list-content chat template writes for
    each modality (``{"image": "<image>"}``), and ``typed_media`` has the template given list
    content always (one that writes text of its own around media, as ``Audio 1: ``). A model
    with media ``processors`` tokenizes its prompts as its ``transformers`` processor does."""
    tokenizer = tokenizer or TextTokenizer(tokenizer_spec)
    return LoadedModel(
        name=ctx.name or (path.stem if path.is_file() else path.name),
        vlm=net,
        tokenizer=tokenizer,
        template=build_template(
            tokenizer_spec,
            tokenizer,
            ctx.chat_template,
            media_markers,
            bool(processors),
            typed_media,
        ),
        context_length=cfg.max_position,
        family=family,
        license=license,
        processors=processors or {},
    )
