"""What a weight loader hands back: a decoder config, a state dict and the tokenizer's data."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from omniloom.models.backbones.config import DecoderConfig


@dataclass
class TokenizerSpec:
    """Everything needed to rebuild the tokenizer and its chat template."""

    kind: str  # "bpe-bytelevel" (GGUF gpt2), "spm" (GGUF llama) or "tokenizer.json" (HF file)
    tokens: list[str] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)
    special_ids: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # SentencePiece: higher merges first
    token_types: list[int] = field(default_factory=list)  # GGUF's (normal, control, byte, ...)
    add_space_prefix: bool = False  # SentencePiece: a word marker before each text fragment
    pre_tokenizer: str = "default"
    tokenizer_json: str | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    chat_template: str | None = None
    extra_eos_ids: list[int] = field(default_factory=list)


@dataclass
class Checkpoint:
    name: str
    config: DecoderConfig
    state_dict: dict[str, torch.Tensor]
    tokenizer: TokenizerSpec
    license: str | None = None
