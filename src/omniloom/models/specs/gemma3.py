"""Gemma 3 text models (``Gemma3ForCausalLM``) from a Hugging Face directory or a GGUF file
(``gemma3``), on our decoder.

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

A GGUF file says less than ``config.json``; it is read into the same keys with llama.cpp's
rules for what it leaves out (every sixth layer full unless the file gives a pattern, a local
RoPE base of 10 000, the query scaled by the head width, by hidden / heads at the 27B size).
llama.cpp's converter stores the norms as ``1 + weight`` already, and the vocabulary as
SentencePiece pieces with scores.
"""

from __future__ import annotations

from pathlib import Path

import torch
from gguf import GGUFReader

from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.multimodal import MultimodalModel
from omniloom.models.specs.base import SpecContext, assemble, build_decoder
from omniloom.models.weights import gguf_loader, hf_loader

ARCHITECTURES = ("Gemma3ForCausalLM",)
GGUF_ARCHITECTURES = ("gemma3",)
_LLAMA_CPP_27B_LAYERS = 62
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


def gguf_config(reader: GGUFReader) -> dict:
    """A Gemma 3 GGUF file's metadata under the ``config.json`` keys ``decoder_config`` reads."""
    g = lambda key, default=None: gguf_loader.field(reader, f"gemma3.{key}", default)  # noqa: E731
    layers, hidden, heads = g("block_count"), g("embedding_length"), g("attention.head_count")
    head_dim = g("attention.key_length", 256)
    raw = {
        "vocab_size": len(gguf_loader.field(reader, "tokenizer.ggml.tokens")),
        "hidden_size": hidden,
        "intermediate_size": g("feed_forward_length"),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": g("attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rms_norm_eps": g("attention.layer_norm_rms_epsilon", 1e-6),
        "max_position_embeddings": g("context_length", 131_072),
        "tie_word_embeddings": all(t.name != "output.weight" for t in reader.tensors),
        "rope_theta": g("rope.freq_base", 1_000_000.0),
        "rope_local_base_freq": g("rope.freq_base_swa", 10_000.0),
        "query_pre_attn_scalar": hidden // heads if layers == _LLAMA_CPP_27B_LAYERS else head_dim,
        "final_logit_softcapping": g("final_logit_softcapping"),
        "sliding_window": g("attention.sliding_window") or None,
        "layer_types": gguf_layer_types(g("attention.sliding_window_pattern", 6), layers),
    }
    if g("rope.scaling.type") == "linear":
        raw["rope_scaling"] = {"rope_type": "linear", "factor": g("rope.scaling.factor")}
    if not raw["sliding_window"]:
        raw["layer_types"] = ["full_attention"] * layers
    return raw


def gguf_layer_types(pattern, layers: int) -> list[str]:
    """llama.cpp's sliding-window pattern: one flag per layer, or every ``pattern``-th layer
    full (0: none)."""
    if isinstance(pattern, list):
        sliding = [bool(flag) for flag in pattern]
    else:
        sliding = [pattern == 0 or i % pattern < pattern - 1 for i in range(layers)]
    return ["sliding_attention" if flag else "full_attention" for flag in sliding]


def our_weights(
    state: dict[str, torch.Tensor], raw: dict, cfg: DecoderConfig, norm_offset: float = 1.0
) -> dict:
    """The checkpoint's tensors under our names, norms as ``norm_offset + weight`` in fp32
    (GGUF files hold the sum already), the query norm also carrying the attention scale."""
    query_scale = (cfg.dim_per_head / raw.get("query_pre_attn_scalar", 256)) ** 0.5
    out = {}
    for key, tensor in state.items():
        for old, new in _RENAMES:
            key = key.replace(old, new)
        if key.endswith("norm.weight"):
            tensor = tensor.float() + norm_offset
            if key.endswith("q_norm.weight"):
                tensor = tensor * query_scale
        out[key] = tensor
    return out


def load(path: Path, ctx: SpecContext):
    if path.is_dir():
        raw = hf_loader.read_config(path)
        cfg = decoder_config(raw)
        weights = our_weights(hf_loader.read_weights(path), raw, cfg)
        tokenizer, license = hf_loader.read_tokenizer(path, raw), None
    else:
        reader = GGUFReader(str(path))
        raw = gguf_config(reader)
        cfg = decoder_config(raw)
        state = gguf_loader.read_state_dict(reader, cfg, "gemma3")
        weights = our_weights(state, raw, cfg, norm_offset=0.0)
        tokenizer = gguf_loader.read_tokenizer(reader)
        license = gguf_loader.field(reader, "general.license")
    backbone = build_decoder(cfg, weights, ctx)
    net = MultimodalModel(backbone)
    return assemble(path, ctx, net, tokenizer, cfg, "gemma3", license=license)
