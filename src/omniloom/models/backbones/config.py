"""The configuration of a Llama/Qwen2/Qwen3-family decoder, independent of the file it came from."""

from __future__ import annotations

from dataclasses import dataclass

HF_ARCHITECTURES = (
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
)


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_position: int = 2048
    tie_embeddings: bool = True
    attention_bias: bool = False
    head_dim: int | None = None
    mrope_section: tuple[int, ...] | None = None  # M-RoPE's rotary sections (Qwen2-VL)
    qk_norm: bool = False  # RMSNorm on each head's query and key before RoPE (Qwen3)
    hidden_act: str = "silu"  # the gated MLP's activation ("gelu_pytorch_tanh": Gemma)
    embed_scale: float = 1.0  # token embeddings are multiplied by it (Gemma: √hidden)
    sandwich_norms: bool = False  # a norm on each attention and MLP output too (Gemma 3)
    sliding_window: int | None = None  # how far back the ``sliding_layers`` attend
    sliding_layers: tuple[int, ...] = ()
    local_rope_theta: float | None = None  # the sliding layers' RoPE base, where it differs
    rope_factor: float = 1.0  # linear RoPE scaling (positions divided by it)

    @property
    def plain_llama_layers(self) -> bool:
        """Whether every layer is the Llama layer the fused C++ stack computes."""
        return not (
            self.qk_norm
            or self.sandwich_norms
            or self.sliding_layers
            or self.hidden_act != "silu"
            or self.local_rope_theta
        )

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, cfg: dict) -> DecoderConfig:
        """Build from a Hugging Face ``config.json`` of one of ``HF_ARCHITECTURES``."""
        arch = (cfg.get("architectures") or ["LlamaForCausalLM"])[0]
        if arch not in HF_ARCHITECTURES:
            raise ValueError(f"unsupported architecture {arch}")
        if cfg.get("rope_scaling"):
            raise ValueError("rope_scaling is not supported yet")
        qwen = arch == "Qwen2ForCausalLM"
        rope_theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta")
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            num_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            rope_theta=float(rope_theta or 10000.0),
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            max_position=cfg.get("max_position_embeddings", 2048),
            tie_embeddings=cfg.get("tie_word_embeddings", False),
            attention_bias=qwen or cfg.get("attention_bias", False),
            head_dim=cfg.get("head_dim"),
            qk_norm=arch == "Qwen3ForCausalLM",
        )
