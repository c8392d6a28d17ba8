"""Qwen2-Audio: Whisper's encoder with pair pooling, one linear projector, and a Qwen2 decoder.

The checkpoint's ``audio_tower.*`` loads into ``WhisperEncoder``, ``multi_modal_projector.linear``
into a linear layer to the decoder's width, and the language model into our decoder with 1-D
RoPE (``transformers`` 5 writes ``model.audio_tower.*``, ``model.multi_modal_projector.*`` and
``model.language_model.*``; the older top-level names load too). Audio is the only medium: each
clip's span is ``<|audio_bos|> <|AUDIO|>×N <|audio_eos|>`` (``processing/whisper_audio.py``), and
the chat template, which writes ``Audio k: `` before it, sees typed parts.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.encoders.whisper import WhisperEncoder, WhisperEncoderConfig
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
from omniloom.processing.whisper_audio import (
    AudioSpanTokens,
    WhisperAudioClip,
    WhisperAudioProcessor,
)

ARCHITECTURES = ("Qwen2AudioForConditionalGeneration",)
AUDIO_MARKER = "<|audio_bos|><|AUDIO|><|audio_eos|>"
POOL_STRIDE = 2  # encoder positions per audio token (its pair averaging)
_QWEN2_7B = dict(  # what ``transformers`` fills in where the text config leaves keys out
    vocab_size=156032,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
)
_WEIGHT_PREFIXES = (  # checkpoint prefix → (part, our prefix)
    ("model.language_model.", "decoder", "model."),
    ("language_model.model.", "decoder", "model."),
    ("language_model.lm_head.", "decoder", "lm_head."),
    ("model.audio_tower.", "audio", ""),
    ("audio_tower.", "audio", ""),
    ("model.multi_modal_projector.", "projector", ""),
    ("multi_modal_projector.", "projector", ""),
)


def decoder_config(raw: dict) -> DecoderConfig:
    text = _QWEN2_7B | (raw.get("text_config") or {})
    text = text | {"architectures": ["Qwen2ForCausalLM"]}
    text["tie_word_embeddings"] = raw.get("tie_word_embeddings", False)
    return DecoderConfig.from_hf(text)


def split_weights(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    return split_by_prefix(state, _WEIGHT_PREFIXES, ("decoder", "audio", "projector"))


class Qwen2AudioModel(MultimodalModel):
    modalities = frozenset({"text", "audio"})

    def __init__(self, backbone, audio: WhisperEncoder, projector: nn.Module, pad: int):
        super().__init__(backbone)
        self.audio = audio
        self.projector = projector
        self.audio_pad = pad

    def placeholder_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return ids == self.audio_pad

    def encode(self, items: list[WhisperAudioClip]) -> list[torch.Tensor]:
        """Each clip's windows through the encoder (the frames each clip fills), projected."""
        out = []
        for item in items:
            windows = [self.audio(mel.to(self.device), filled) for mel, filled in item.features()]
            features = torch.cat(windows) if windows else torch.empty(0, self.audio.cfg.d_model)
            out.append(self.projector(features.to(self.projector.weight.dtype)).to(self.dtype))
        return out


def audio_processor(directory: Path, raw: dict | None = None, tokenizer=None):
    """The checkpoint's audio processor alone (no weights read)."""
    raw = raw or read_config(directory)
    tokenizer = tokenizer or TextTokenizer(read_tokenizer(directory, raw))
    pad = raw.get("audio_token_index", raw.get("audio_token_id"))
    tokens = AudioSpanTokens(
        start=tokenizer.token_id("<|audio_bos|>"),
        pad=tokenizer.token_id("<|AUDIO|>") if pad is None else pad,
        end=tokenizer.token_id("<|audio_eos|>"),
    )
    n_mels = WhisperEncoderConfig.from_hf(raw.get("audio_config") or {}).n_mels
    return WhisperAudioProcessor(n_mels, POOL_STRIDE, tokens)


def load(directory: Path, ctx: SpecContext):
    raw = read_config(directory)
    tokenizer_spec = read_tokenizer(directory, raw)
    tokenizer = TextTokenizer(tokenizer_spec)
    weights = split_weights(read_weights(directory))
    cfg = decoder_config(raw)
    backbone = build_decoder(cfg, weights["decoder"], ctx)
    audio_cfg = WhisperEncoderConfig.from_hf(raw.get("audio_config") or {})
    audio = strict_load(lambda: WhisperEncoder(audio_cfg), weights["audio"], ctx)
    projector = strict_load(
        lambda: nn.Linear(audio_cfg.d_model, cfg.hidden_size),
        {k.removeprefix("linear."): v for k, v in weights["projector"].items()},
        ctx,
    )
    processor = audio_processor(directory, raw, tokenizer)
    return assemble(
        directory,
        ctx,
        Qwen2AudioModel(backbone, audio, projector, processor.tokens.pad),
        tokenizer_spec,
        cfg,
        "qwen2-audio",
        processors={"audio": processor},
        tokenizer=tokenizer,
        media_markers={"audio": AUDIO_MARKER},
        typed_media=True,
    )
