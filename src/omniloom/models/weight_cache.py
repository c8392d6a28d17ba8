"""Converted weights, cached on disk so that second and later start-ups skip the conversion.

Serving a GGUF file means parsing its whole vocabulary, dequantizing every tensor and, for a
packed weight format, quantizing every row again: about 6 s for SmolLM2-135M on two cores. The
first load writes the result (the config, the tokenizer's data and the settled decoder's tensors)
to ``CACHE_DIR/weights/<sha256 of the file>-<format>-<conversion>.pt``; later loads map that
file and assign its tensors to a decoder built on the meta device. ``<conversion>`` hashes the
code that converts (the GGUF reader, the weight packing, the decoder's parameter names) and the
PyTorch version, so a change to any of them converts again instead of serving stale weights. A
cache file that cannot be read is converted again and replaced; writes go through a temporary
file and a rename, so a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from omniloom.models import quantize
from omniloom.models.backbones import llama
from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.backbones.llama import LlamaForCausalLM
from omniloom.models.specs.base import SpecContext, build_decoder
from omniloom.models.weights import gguf_loader
from omniloom.models.weights.checkpoint import Checkpoint, TokenizerSpec

log = logging.getLogger(__name__)

_CONVERSION_CODE = [Path(m.__file__) for m in (gguf_loader, quantize, llama)] + [Path(__file__)]


def gguf_decoder(path: Path, ctx: SpecContext) -> tuple[Checkpoint, LlamaForCausalLM]:
    """The GGUF file's checkpoint (config, tokenizer; no tensors) and its decoder in
    ``ctx.weight_format``, from ``ctx.cache_dir`` when it holds them, else converted and stored."""
    if ctx.cache_dir is None:
        return _convert(path, ctx)
    cached = cache_file(path, ctx)
    if cached.exists():
        try:
            return _read(cached, ctx)
        except Exception as exc:  # truncated or foreign file: convert again and replace it
            log.warning("converted weights at %s unreadable (%s); converting again", cached, exc)
    ckpt, decoder = _convert(path, ctx)
    _write(cached, ckpt, decoder)
    return ckpt, decoder


def cache_file(path: Path, ctx: SpecContext) -> Path:
    """Where ``path``'s decoder in ``ctx.weight_format`` is (or would be) cached."""
    with path.open("rb") as f:
        source = hashlib.file_digest(f, "sha256").hexdigest()
    code = hashlib.sha256(torch.__version__.encode())
    for module in _CONVERSION_CODE:
        code.update(module.read_bytes())
    name = f"{source}-{ctx.weight_format}-{code.hexdigest()[:16]}.pt"
    return ctx.cache_dir / "weights" / name


def _convert(path: Path, ctx: SpecContext) -> tuple[Checkpoint, LlamaForCausalLM]:
    ckpt = gguf_loader.load_gguf(path)
    decoder = build_decoder(ckpt.config, ckpt.state_dict, ctx)
    return dataclasses.replace(ckpt, state_dict={}), decoder


def _write(target: Path, ckpt: Checkpoint, decoder: LlamaForCausalLM) -> None:
    described = {
        "name": ckpt.name,
        "license": ckpt.license,
        "config": dataclasses.asdict(ckpt.config),
        "tokenizer": dataclasses.asdict(ckpt.tokenizer),
    }
    payload = {"checkpoint": json.dumps(described), "tensors": decoder.state_dict()}
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as tmp:
        torch.save(payload, tmp)
    os.replace(tmp.name, target)
    log.info("converted weights cached at %s", target)


def _read(cached: Path, ctx: SpecContext) -> tuple[Checkpoint, LlamaForCausalLM]:
    payload = torch.load(cached, mmap=True, weights_only=True)
    described = json.loads(payload["checkpoint"])
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in described["config"].items()}
    ckpt = Checkpoint(
        name=described["name"],
        config=DecoderConfig(**config),
        state_dict={},
        tokenizer=TokenizerSpec(**described["tokenizer"]),
        license=described["license"],
    )
    return ckpt, _settled_decoder(ckpt.config, payload["tensors"], ctx)


def _settled_decoder(cfg: DecoderConfig, tensors: dict, ctx: SpecContext) -> LlamaForCausalLM:
    """A decoder laid out as ``settle_dtypes`` leaves it, holding ``tensors``."""
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
        quantize.settle_dtypes(model, ctx.weight_format)
    model.load_state_dict(tensors, strict=True, assign=True)
    model.build_rotary()
    if cfg.tie_embeddings and ctx.weight_format != "int8":  # int8 keeps a head of its own
        table = model.model.embed_tokens.weight
        model.lm_head.weight = table if ctx.weight_format == "float32" else table.detach()
    return model.to(device=ctx.device).eval().requires_grad_(False)
