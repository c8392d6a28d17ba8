"""Load a Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.weights.checkpoint import Checkpoint, TokenizerSpec


def _eos_ids(directory: Path, cfg: dict, tok_cfg: dict, tokenizer_json: str | None) -> list[int]:
    """End-of-sequence ids: ``generation_config.json``'s, else the config's (or its text
    config's), plus the tokenizer config's ``eos_token``."""
    gen_file = directory / "generation_config.json"
    gen = json.loads(gen_file.read_text()) if gen_file.exists() else {}
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    if eos is None:
        eos = (cfg.get("text_config") or {}).get("eos_token_id")
    ids = eos if isinstance(eos, list) else [eos]
    eos_token = tok_cfg.get("eos_token")
    if isinstance(eos_token, dict):
        eos_token = eos_token.get("content")
    if eos_token and tokenizer_json:
        ids.append(Tokenizer.from_str(tokenizer_json).token_to_id(eos_token))
    return list(dict.fromkeys(i for i in ids if i is not None))


def _bos_id(cfg: dict, tok_cfg: dict, tokenizer_json: str | None) -> int | None:
    """The config's (or its text config's) ``bos_token_id``, else the tokenizer config's
    ``bos_token``."""
    bos = cfg.get("bos_token_id")
    if bos is None:
        bos = (cfg.get("text_config") or {}).get("bos_token_id")
    token = tok_cfg.get("bos_token")
    if isinstance(token, dict):
        token = token.get("content")
    if bos is None and token and tokenizer_json:
        bos = Tokenizer.from_str(tokenizer_json).token_to_id(token)
    return bos


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
    eos_ids = _eos_ids(directory, cfg, tok_cfg, tokenizer_json)
    return TokenizerSpec(
        kind="tokenizer.json",
        tokenizer_json=tokenizer_json,
        bos_id=_bos_id(cfg, tok_cfg, tokenizer_json),
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
