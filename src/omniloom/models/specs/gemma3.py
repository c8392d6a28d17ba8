"""Gemma 3 text models (``Gemma3ForCausalLM``) from a Hugging Face directory, on our decoder.

What Gemma 3 changes from Llama is carried by ``DecoderConfig``: a GELU(tanh)-gated MLP, a norm
on each sublayer's output as well as its input, embeddings scaled by √hidden, sliding-window
attention on most layers (``layer_types``) with a RoPE base of their own, and linear RoPE
scaling on the full-attention layers where the checkpoint asks for it. Two things are folded
into the weights at load: Gemma's norms multiply by ``1 + weight`` (stored here as that sum,
in fp32), and its attention scale ``query_pre_attn_scalar ** -0.5`` becomes a factor on the
query norm, since RoPE and the dot product are linear in the query. Checkpoint names map onto
ours: ``pre_feedforward_layernorm`` is our MLP input norm (``post_attention_layernorm``), and
Gemma's ``post_attention_layernorm`` / ``post_feedforward_layernorm`` are our
``attn_output_norm`` / ``mlp_output_norm``. Logit soft-capping (Gemma 2) is refused.
"""

from __future__ import annotations

from pathlib import Path

import torch

from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.multimodal import MultimodalModel
from omniloom.models.specs.base import SpecContext, assemble, build_decoder
from omniloom.models.weights.hf_loader import read_config, read_tokenizer, read_weights

ARCHITECTURES = ("Gemma3ForCausalLM",)
_RENAMES = (  # Gemma's layer norm names → ours, in this order
    (".post_attention_layernorm.", ".attn_output_norm."),
    (".pre_feedforward_layernorm.", ".post_attention_layernorm."),
    (".post_feedforward_layernorm.", ".mlp_output_norm."),
)


def _rope(raw: dict) -> tuple[dict, dict]:
    """(full-attention, sliding-attention) RoPE parameters, from either config layout."""
    params = raw.get("rope_parameters") or {}
    full = dict(params.get("full_attention") or {})
    local = dict(params.get("sliding_attention") or {})
    full.setdefault("rope_theta", raw.get("rope_theta", 1_000_000.0))
    local.setdefault("rope_theta", raw.get("rope_local_base_freq", 10_000.0))
    full.update(raw.get("rope_scaling") or {})
    return full, local


def _layer_types(raw: dict) -> list[str]:
    pattern = raw.get("sliding_window_pattern", 6)
    layers = raw.get("num_hidden_layers", 26)
    default = [
        "sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(layers)
    ]
    return raw.get("layer_types") or default


def decoder_config(raw: dict) -> DecoderConfig:
    for capping in ("final_logit_softcapping", "attn_logit_softcapping"):
        if raw.get(capping):
            raise ValueError(f"Gemma with {capping} (Gemma 2) is not supported")
    if raw.get("use_bidirectional_attention"):
        raise ValueError("Gemma with bidirectional attention is not supported")
    full, local = _rope(raw)
    rope_type = full.get("rope_type", full.get("type", "default"))
    if rope_type not in ("default", "linear"):
        raise ValueError(f"Gemma 3 RoPE type {rope_type!r} is not supported")
    hidden = raw.get("hidden_size", 2304)
    heads = raw.get("num_attention_heads", 8)
    return DecoderConfig(
        vocab_size=raw.get("vocab_size", 262_208),
        hidden_size=hidden,
        intermediate_size=raw.get("intermediate_size", 9216),
        num_layers=raw.get("num_hidden_layers", 26),
        num_heads=heads,
        num_kv_heads=raw.get("num_key_value_heads", 4),
        rope_theta=float(full["rope_theta"]),
        rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
        max_position=raw.get("max_position_embeddings", 131_072),
        tie_embeddings=raw.get("tie_word_embeddings", True),
        attention_bias=raw.get("attention_bias", False),
        head_dim=raw.get("head_dim", 256),
        qk_norm=True,
        hidden_act=raw.get("hidden_activation", "gelu_pytorch_tanh"),
        embed_scale=hidden**0.5,
        sandwich_norms=True,
        sliding_window=raw.get("sliding_window", 4096),
        sliding_layers=tuple(
            i for i, kind in enumerate(_layer_types(raw)) if kind == "sliding_attention"
        ),
        local_rope_theta=float(local["rope_theta"]),
        rope_factor=float(full.get("factor", 1.0)) if rope_type == "linear" else 1.0,
    )


def our_weights(state: dict[str, torch.Tensor], raw: dict, cfg: DecoderConfig) -> dict:
    """The checkpoint's tensors under our names, norms as ``1 + weight`` in fp32, the query
    norm also carrying the attention scale."""
    query_scale = (cfg.dim_per_head / raw.get("query_pre_attn_scalar", 256)) ** 0.5
    out = {}
    for key, tensor in state.items():
        for old, new in _RENAMES:
            key = key.replace(old, new)
        if key.endswith("norm.weight"):
            tensor = tensor.float() + 1.0
            if key.endswith("q_norm.weight"):
                tensor = tensor * query_scale
        out[key] = tensor
    return out


def load(directory: Path, ctx: SpecContext):
    raw = read_config(directory)
    cfg = decoder_config(raw)
    backbone = build_decoder(cfg, our_weights(read_weights(directory), raw, cfg), ctx)
    return assemble(
        directory, ctx, MultimodalModel(backbone), read_tokenizer(directory, raw), cfg, "gemma3"
    )
