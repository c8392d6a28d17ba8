"""Our Llama/Qwen2/Qwen3/Gemma 3-family decoder: RMSNorm, RoPE, grouped-query attention, SwiGLU,
tied embeddings, Qwen3's per-head query/key norms, and what Gemma 3 adds (a GELU-gated MLP,
norms on each sublayer's output, scaled embeddings, and sliding-window layers with a RoPE base
of their own).

It consumes input *embeddings* (so the VLM can splice image, audio or video embeddings into the
text stream) plus the absolute position of the first one, and returns logits. Parameter names
match Hugging Face's ``LlamaForCausalLM`` so safetensors checkpoints load without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omniloom import kernels
from omniloom.models import meta_init
from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.backbones.kv_cache import KVCache, StaticKVCache, causal_mask
from omniloom.models.lora import LoRALinear
from omniloom.models.quantize import Linear


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if kernels.usable(x, self.weight):
            return kernels.rms_norm(x, self.weight, self.eps)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin tables in float32 (rotate-half convention, as Hugging Face), computed for the
    positions used so far and regrown by doubling: a 131k-token context costs nothing until a
    sequence gets there. A row is the same whatever size the table has."""

    MIN_ROWS = 4096

    def __init__(self, head_dim: int, max_position: int, theta: float, factor: float = 1.0):
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq / factor, persistent=False)  # linear scaling
        self.max_position = max_position
        self.register_buffer("cos", torch.empty(0, head_dim), persistent=False)
        self.register_buffer("sin", torch.empty(0, head_dim), persistent=False)

    def rows(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fp32 tables, grown to cover every position in ``positions``."""
        needed = int(positions.max()) + 1 if positions.numel() else 0
        if needed > self.cos.shape[0]:
            size = max(needed, min(self.max_position, max(self.MIN_ROWS, 2 * self.cos.shape[0])))
            steps = torch.arange(size, dtype=torch.float32, device=self.inv_freq.device)
            angles = torch.outer(steps, self.inv_freq)
            angles = torch.cat([angles, angles], dim=-1)
            self.cos, self.sin = angles.cos(), angles.sin()
        return self.cos, self.sin

    def table(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin rows (T, head_dim) for absolute ``positions`` (T,), once per forward."""
        cos, sin = self.rows(positions)
        return cos[positions].to(dtype), sin[positions].to(dtype)


class MultimodalRotaryEmbedding(RotaryEmbedding):
    """Qwen2-VL's M-RoPE: positions have three axes (time, row, column) and each section of
    a head's rotary frequencies turns with one of them. Text has the same position on every
    axis, which is plain RoPE; media tokens carry their grid position."""

    def __init__(self, head_dim: int, max_position: int, theta: float, sections: tuple[int, ...]):
        super().__init__(head_dim, max_position, theta)
        axis = torch.cat([torch.full((n,), i % 3) for i, n in enumerate(sections)])
        self.register_buffer("axis", torch.cat([axis, axis]), persistent=False)

    def table(self, positions: torch.Tensor, dtype: torch.dtype):
        """``positions`` (T,) as plain RoPE, or (3, T): each frequency from its own axis."""
        if positions.dim() == 1:
            return super().table(positions, dtype)
        cos, sin = self.rows(positions)
        index = self.axis[None, None, :].expand(1, positions.shape[1], -1)
        cos = cos[positions].gather(0, index)[0]
        sin = sin[positions].gather(0, index)[0]
        return cos.to(dtype), sin.to(dtype)


def rotary_for(cfg: DecoderConfig) -> RotaryEmbedding:
    if cfg.mrope_section:
        return MultimodalRotaryEmbedding(
            cfg.dim_per_head, cfg.max_position, cfg.rope_theta, cfg.mrope_section
        )
    return RotaryEmbedding(cfg.dim_per_head, cfg.max_position, cfg.rope_theta, cfg.rope_factor)


def local_rotary_for(cfg: DecoderConfig) -> RotaryEmbedding | None:
    """The sliding layers' own RoPE where their base differs (Gemma 3), else None."""
    if not cfg.local_rope_theta:
        return None
    return RotaryEmbedding(cfg.dim_per_head, cfg.max_position, cfg.local_rope_theta)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        hd = cfg.dim_per_head
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        bias = cfg.attention_bias
        self.q_proj = Linear(cfg.hidden_size, cfg.num_heads * hd, bias=bias)
        self.k_proj = Linear(cfg.hidden_size, cfg.num_kv_heads * hd, bias=bias)
        self.v_proj = Linear(cfg.hidden_size, cfg.num_kv_heads * hd, bias=bias)
        self.o_proj = Linear(cfg.num_heads * hd, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(hd, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(hd, cfg.rms_norm_eps) if cfg.qk_norm else None

    def _per_head(self, norm: RMSNorm | None, x: torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, heads · head_dim) normed per head where the family has it (Qwen3)."""
        if norm is None:
            return x
        b, t, width = x.shape
        return norm(x.reshape(b, t, -1, self.head_dim)).reshape(b, t, width)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None,
        layer: int,
        window: int | None = None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q = self._per_head(self.q_norm, self.q_proj(x))
        k = self._per_head(self.k_norm, self.k_proj(x))
        in_place = b == 1 and kernels.usable(q) and q.is_contiguous() and k.is_contiguous()
        if in_place:
            kernels.rope_(q, cos, sin)
            kernels.rope_(k, cos, sin)
        q = q.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if not in_place:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if cache is None and window is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=True)
        elif cache is None:
            mask = causal_mask(t, t, q.device, window)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        else:
            out = cache.attend(layer, q, k, v, window)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.gelu = cfg.hidden_act == "gelu_pytorch_tanh"
        if not self.gelu and cfg.hidden_act != "silu":
            raise ValueError(f"unsupported MLP activation {cfg.hidden_act!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        if self.gelu:
            return self.down_proj(F.gelu(gate, approximate="tanh") * up)
        if kernels.usable(gate):  # the same op as the fused layer stack, bit for bit
            return self.down_proj(kernels.silu_mul(gate, up))
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    """Pre-norm attention and MLP; ``post_attention_layernorm`` is the MLP's input norm (HF
    Llama's name). With sandwich norms (Gemma 3) each sublayer's output is normed too."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)
        sandwich = cfg.sandwich_norms
        self.attn_output_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps) if sandwich else None
        self.mlp_output_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps) if sandwich else None

    def forward(self, x, cos, sin, cache, layer, window=None):
        attended = self.self_attn(self.input_layernorm(x), cos, sin, cache, layer, window)
        x = x + (self.attn_output_norm(attended) if self.attn_output_norm else attended)
        mixed = self.mlp(self.post_attention_layernorm(x))
        return x + (self.mlp_output_norm(mixed) if self.mlp_output_norm else mixed)


class DecoderBody(nn.Module):
    """Embedding table, the stack of layers and the final norm (HF's ``model.*`` prefix)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.embed_tokens = meta_init.embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.config = cfg
        self.model = DecoderBody(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rope = self.local_rope = None
        if not self.lm_head.weight.is_meta:  # a meta model gets them after its weights load
            self.build_rotary()
        self._stack = None  # the fused layer stack, built on first use
        self._stack_adapters: list[LoRALinear] = []

    def build_rotary(self) -> None:
        """The RoPE tables (computed, not loaded: rebuilt after a load onto the meta device)."""
        self.rope = rotary_for(self.config)
        self.local_rope = local_rotary_for(self.config)

    @property
    def activation_dtype(self) -> torch.dtype:
        """What hidden states are computed in (the norms' dtype; weights may be packed smaller)."""
        return self.model.norm.weight.dtype

    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        rows = self.model.embed_tokens(token_ids)
        if self.config.embed_scale != 1.0:  # in the table's dtype, as Gemma does it
            rows = rows * torch.tensor(self.config.embed_scale, dtype=rows.dtype)
        return rows.to(self.activation_dtype)

    def new_cache(self, batch: int, max_len: int) -> StaticKVCache:
        cfg = self.config
        dtype, device = self.activation_dtype, self.model.norm.weight.device
        return StaticKVCache(
            cfg.num_layers, batch, cfg.num_kv_heads, max_len, cfg.dim_per_head, dtype, device
        )

    def forward(
        self,
        embeds: torch.Tensor,
        cache: KVCache | None = None,
        last_only: bool = False,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run ``embeds`` (B, T, H) starting at the cache's length (or at ``positions``, (T,) or
        (3, T) for M-RoPE); return logits (B, T or 1, V)."""
        x = self.hidden_states(embeds, cache, positions)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(x).float()

    def hidden_states(
        self,
        embeds: torch.Tensor,
        cache: KVCache | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states (B, T, H); training applies ``lm_head`` where it needs to."""
        t = embeds.shape[1]
        if positions is None:
            positions = cache.positions(t) if cache is not None else torch.arange(t)
        positions = positions.to(embeds.device)
        cos, sin = self.rope.table(positions, embeds.dtype)
        if self._fused_stack_applies(embeds, cache):
            x = self._layer_stack().forward(embeds[0], cos, sin, *cache.stack_inputs())[None]
        else:
            local = self.local_rope.table(positions, embeds.dtype) if self.local_rope else None
            x = embeds
            for i, layer in enumerate(self.model.layers):
                sliding = i in self.config.sliding_layers
                rope = local if sliding and local else (cos, sin)
                window = self.config.sliding_window if sliding else None
                x = layer(x, *rope, cache, i, window)
        if cache is not None:
            cache.advance(t)
        return self.model.norm(x)

    def _fused_stack_applies(self, embeds: torch.Tensor, cache: KVCache | None) -> bool:
        """A step of the paged cache with every adapter off runs its layers in one C++ call
        (plain Llama layers only)."""
        if not self.config.plain_llama_layers:
            return False
        if not hasattr(cache, "stack_inputs") or not kernels.usable(embeds):
            return False
        self._layer_stack()
        return all(adapter.active is False for adapter in self._stack_adapters)

    def forget_layer_stack(self) -> None:
        """Drop the fused stack after layers are replaced (adapters attached, weights packed)."""
        self._stack, self._stack_adapters = None, []

    def _layer_stack(self):
        """Built on first use from the layers' current weights (shared, not copied)."""
        if self._stack is None:
            cfg = self.config
            self._stack = kernels.layer_stack(
                [_layer_tensors(layer) for layer in self.model.layers],
                cfg.rms_norm_eps,
                cfg.num_heads,
                cfg.num_kv_heads,
                cfg.dim_per_head,
            )
            self._stack_adapters = [
                m for m in self.model.layers.modules() if isinstance(m, LoRALinear)
            ]
        return self._stack


def _projection_tensors(module: nn.Module) -> list[torch.Tensor]:
    """(weight, scales, bias) of a plain or packed projection, empty tensors for what it lacks."""
    module = module.base if isinstance(module, LoRALinear) else module
    scales = getattr(module, "scales", None)
    return [
        module.weight.detach(),
        scales if scales is not None else torch.empty(0),
        module.bias.detach() if module.bias is not None else torch.empty(0),
    ]


def _layer_tensors(layer: DecoderLayer) -> list[torch.Tensor]:
    attn, mlp = layer.self_attn, layer.mlp
    out = [layer.input_layernorm.weight.detach()]
    for projection in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
        out += _projection_tensors(projection)
    out.append(layer.post_attention_layernorm.weight.detach())
    for projection in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        out += _projection_tensors(projection)
    return out
