"""Load a Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.weights.checkpoint import Checkpoint, TokenizerSpec


def _config_id(cfg: dict, key: str):
    """``key`` from the config, else from its text config (multimodal checkpoints)."""
    value = cfg.get(key)
    return (cfg.get("text_config") or {}).get(key) if value is None else value


def _named_token_id(tok_cfg: dict, name: str, tokenizer: Tokenizer | None) -> int | None:
    """The id of the tokenizer config's ``name`` token (``eos_token``, ``bos_token``)."""
    token = tok_cfg.get(name)
    if isinstance(token, dict):
        token = token.get("content")
    return tokenizer.token_to_id(token) if token and tokenizer else None


def _eos_ids(directory: Path, cfg: dict, tok_cfg: dict, tokenizer: Tokenizer | None) -> list[int]:
    """End-of-sequence ids: ``generation_config.json``'s, else the config's (or its text
    config's), plus the tokenizer config's ``eos_token``."""
    gen_file = directory / "generation_config.json"
    gen = json.loads(gen_file.read_text()) if gen_file.exists() else {}
    eos = gen.get("eos_token_id", _config_id(cfg, "eos_token_id"))
    ids = eos if isinstance(eos, list) else [eos]
    ids.append(_named_token_id(tok_cfg, "eos_token", tokenizer))
    return list(dict.fromkeys(i for i in ids if i is not None))


def read_tokenizer(directory: Path, cfg: dict) -> TokenizerSpec:
    """The tokenizer and chat template of a Hugging Face checkpoint directory."""
    tok_file = directory / "tokenizer.json"
    tok_cfg_file = directory / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_file.read_text()) if tok_cfg_file.exists() else {}
    template = tok_cfg.get("chat_template")
    jinja_file = directory / "chat_template.jinja"
    if template is None and jinja_file.exists():
        template = jinja_file.read_text()
    tokenizer_json = tok_file.read_text() if tok_file.exists() else None
    tokenizer = Tokenizer.from_str(tokenizer_json) if tokenizer_json else None  # parsed once
    eos_ids = _eos_ids(directory, cfg, tok_cfg, tokenizer)
    bos_id = _config_id(cfg, "bos_token_id")
    return TokenizerSpec(
        kind="tokenizer.json",
        tokenizer_json=tokenizer_json,
        bos_id=_named_token_id(tok_cfg, "bos_token", tokenizer) if bos_id is None else bos_id,
        eos_id=eos_ids[0] if eos_ids else None,
        extra_eos_ids=eos_ids[1:],
        pad_id=cfg.get("pad_token_id"),
        chat_template=template,
    )


def read_config(directory: Path) -> dict:
    return json.loads((directory / "config.json").read_text())


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    state = {}
    for shard in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    if not state:
        raise FileNotFoundError(f"no *.safetensors files in {directory}")
    return state


def load_hf_directory(directory: str | Path) -> Checkpoint:
    """A text-only checkpoint: the decoder's config, weights and tokenizer."""
    directory = Path(directory)
    raw_cfg = read_config(directory)
    cfg = DecoderConfig.from_hf(raw_cfg)
    state = read_weights(directory)
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return Checkpoint(
        name=directory.name,
        config=cfg,
        state_dict=state,
        tokenizer=read_tokenizer(directory, raw_cfg),
    )
