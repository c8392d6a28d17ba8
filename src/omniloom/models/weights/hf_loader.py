"""Load a Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.weights.checkpoint import Checkpoint, TokenizerSpec


def _read_tokenizer(directory: Path, cfg: dict) -> TokenizerSpec:
    tok_file = directory / "tokenizer.json"
    tok_cfg_file = directory / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_file.read_text()) if tok_cfg_file.exists() else {}
    template = tok_cfg.get("chat_template")
    jinja_file = directory / "chat_template.jinja"
    if template is None and jinja_file.exists():
        template = jinja_file.read_text()
    eos = cfg.get("eos_token_id")
    eos_ids = eos if isinstance(eos, list) else [eos]
    return TokenizerSpec(
        kind="tokenizer.json",
        tokenizer_json=tok_file.read_text() if tok_file.exists() else None,
        bos_id=cfg.get("bos_token_id"),
        eos_id=eos_ids[0],
        extra_eos_ids=[i for i in eos_ids[1:] if i is not None],
        pad_id=cfg.get("pad_token_id"),
        chat_template=template,
    )


def load_hf_directory(directory: str | Path) -> Checkpoint:
    directory = Path(directory)
    raw_cfg = json.loads((directory / "config.json").read_text())
    cfg = DecoderConfig.from_hf(raw_cfg)
    state = {}
    for shard in sorted(directory.glob("*.safetensors")):
        state.update(load_file(str(shard)))
    if not state:
        raise FileNotFoundError(f"no *.safetensors files in {directory}")
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return Checkpoint(
        name=directory.name,
        config=cfg,
        state_dict=state,
        tokenizer=_read_tokenizer(directory, raw_cfg),
    )
