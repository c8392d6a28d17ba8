"""Read a GGUF file (llama.cpp's format) into a Hugging Face-named state dict.

Quantized tensors (Q4_1, Q8_0, the K-quants, ...) are dequantized with the ``gguf`` library.
llama.cpp's converter permutes the rows of Q and K for the ``llama`` architecture (interleaved
rotary pairs); we undo that so one decoder implementation serves GGUF and safetensors alike.
Tensor names map back to the Hugging Face names of the architecture's own checkpoints (Gemma 3's
four norms per layer included); what else a family's converter changed (Gemma's norms stored as
``1 + w``) is the family spec's business. Vocabularies come as byte-level BPE (``gpt2``) or
SentencePiece (``llama``, with scores and token types).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.tokenizer import TokenType
from omniloom.models.weights.checkpoint import Checkpoint, TokenizerSpec

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_ARCH_LAYER_NAMES = {
    "gemma3": _LAYER_NAMES
    | {
        "post_attention_norm.weight": "post_attention_layernorm.weight",
        "ffn_norm.weight": "pre_feedforward_layernorm.weight",
        "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
    }
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3")
# tokens llama.cpp ends a generation on besides the vocabulary's EOS (its end-of-turn list)
_END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>")


def field(reader: GGUFReader, key: str, default=None):
    """A metadata value, or ``default`` where the file lacks it."""
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_config(reader: GGUFReader) -> DecoderConfig:
    arch = field(reader, "general.architecture")
    if arch not in _SUPPORTED_ARCHS:
        raise ValueError(f"GGUF architecture {arch!r} is not supported ({_SUPPORTED_ARCHS})")
    g = lambda key, default=None: field(reader, f"{arch}.{key}", default)  # noqa: E731
    heads = g("attention.head_count")
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    tokens = field(reader, "tokenizer.ggml.tokens")
    return DecoderConfig(
        vocab_size=g("vocab_size") or len(tokens),
        hidden_size=g("embedding_length"),
        intermediate_size=g("feed_forward_length"),
        num_layers=g("block_count"),
        num_heads=heads,
        num_kv_heads=g("attention.head_count_kv", heads),
        rope_theta=float(g("rope.freq_base", 10000.0)),
        rms_norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
        max_position=g("context_length", 2048),
        tie_embeddings=not has_output,
        attention_bias=arch == "qwen2",
        head_dim=g("attention.key_length") or g("rope.dimension_count"),
        qk_norm=arch == "qwen3",
    )


def _hf_name(gguf_name: str, arch: str) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    names = _ARCH_LAYER_NAMES.get(arch, _LAYER_NAMES)
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if not m or m.group(2) not in names:
        raise ValueError(f"unexpected GGUF tensor {gguf_name}")
    return f"model.layers.{m.group(1)}.{names[m.group(2)]}"


def unpermute_rotary_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Invert llama.cpp's Q/K row permutation (interleaved pairs back to rotate-half)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor(reader_tensor) -> np.ndarray:
    qtype = reader_tensor.tensor_type
    shape = tuple(int(d) for d in reversed(reader_tensor.shape))
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        return np.asarray(reader_tensor.data, dtype=np.float32).reshape(shape)
    return dequantize(reader_tensor.data, qtype).astype(np.float32).reshape(shape)


def read_state_dict(reader: GGUFReader, cfg: DecoderConfig, arch: str) -> dict[str, torch.Tensor]:
    """Every tensor, dequantized to fp32, under its Hugging Face name."""
    state: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        w = _tensor(t)
        if arch == "llama" and ".attn_q." in t.name:
            w = unpermute_rotary_rows(w, cfg.num_heads)
        elif arch == "llama" and ".attn_k." in t.name:
            w = unpermute_rotary_rows(w, cfg.num_kv_heads)
        state[_hf_name(t.name, arch)] = torch.from_numpy(np.array(w, dtype=np.float32, copy=True))
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state


def read_tokenizer(reader: GGUFReader) -> TokenizerSpec:
    model = field(reader, "tokenizer.ggml.model")
    if model not in ("gpt2", "llama"):
        raise ValueError(
            f"GGUF tokenizer model {model!r} is not supported (gpt2: byte-level BPE; llama: "
            "SentencePiece)"
        )
    tokens = list(field(reader, "tokenizer.ggml.tokens"))
    types = list(field(reader, "tokenizer.ggml.token_type"))
    spec = TokenizerSpec(
        kind="bpe-bytelevel",
        tokens=tokens,
        pre_tokenizer=field(reader, "tokenizer.ggml.pre", "default"),
        bos_id=field(reader, "tokenizer.ggml.bos_token_id"),
        eos_id=field(reader, "tokenizer.ggml.eos_token_id"),
        pad_id=field(reader, "tokenizer.ggml.padding_token_id"),
        add_bos=bool(field(reader, "tokenizer.ggml.add_bos_token", model == "llama")),
        chat_template=field(reader, "tokenizer.chat_template"),
        extra_eos_ids=[i for i, token in enumerate(tokens) if token in _END_OF_TURN],
    )
    if model == "gpt2":
        spec.merges = list(field(reader, "tokenizer.ggml.merges"))
        spec.special_ids = [
            i for i, t in enumerate(types) if t in (TokenType.CONTROL, TokenType.USER_DEFINED)
        ]
        return spec
    spec.kind, spec.token_types = "spm", types
    spec.scores = [float(x) for x in field(reader, "tokenizer.ggml.scores")]
    spec.special_ids = [i for i, t in enumerate(types) if t == TokenType.CONTROL]
    spec.add_space_prefix = bool(field(reader, "tokenizer.ggml.add_space_prefix", True))
    return spec


def load_gguf(path: str | Path) -> Checkpoint:
    reader = GGUFReader(str(path))
    cfg = read_config(reader)
    arch = field(reader, "general.architecture")
    return Checkpoint(
        name=field(reader, "general.name", Path(path).stem),
        config=cfg,
        state_dict=read_state_dict(reader, cfg, arch),
        tokenizer=read_tokenizer(reader),
        license=field(reader, "general.license"),
    )
