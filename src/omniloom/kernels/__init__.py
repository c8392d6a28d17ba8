"""Our CPU kernels (``cpu_kernels.cpp``), compiled on first use for this machine's instruction set.

The C++ source is built with PyTorch's extension builder (g++ and ninja, ``-march=native``) into
PyTorch's extension cache, once per machine and source version; later loads take well under a
second. Where no compiler is available the build fails once, a warning says so, and every caller
falls back to PyTorch's own operators (correct, slower). ``OMNILOOM_KERNELS=0`` turns them off.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=off"]  # FMAs only where written
_build_lock = threading.Lock()
_built: list[ModuleType | None] = []  # filled by the first load()


def _build() -> ModuleType | None:
    if os.environ.get("OMNILOOM_KERNELS", "1") == "0":
        return None
    import ninja
    from torch.utils.cpp_extension import load

    os.environ["PATH"] = f"{ninja.BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"
    try:
        return load(
            "omniloom_cpu_kernels", [str(SOURCE)], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"]
        )
    except Exception as exc:  # no compiler, no headers: PyTorch's operators take over
        log.warning("CPU kernels unavailable, using PyTorch operators (%s)", exc)
        return None


def load() -> ModuleType | None:
    """The compiled module, building it on the first call (about a minute on 2 cores)."""
    if not _built:
        with _build_lock:
            if not _built:
                _built.append(_build())
    return _built[0]


def vectorized() -> bool:
    """Whether the kernels are built with their AVX2 path (AVX-512 and VNNI where the CPU has
    them): the machines where packed int8 weights decode fastest."""
    module = load()
    return module is not None and module.vectorized()


def usable(x: torch.Tensor, weight: torch.Tensor | None = None) -> bool:
    """Whether the kernels can take these: fp32 on the CPU, no gradient to track (hot path).
    The first call builds or loads them, so the path taken never depends on call order."""
    if x.dtype != torch.float32 or not x.is_cpu or load() is None:
        return False
    tracked = x.requires_grad or (weight is not None and weight.requires_grad)
    return not (tracked and torch.is_grad_enabled())


def skinny_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    scales: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x @ (weight * scales[:, None]).T + bias`` for fp32 ``x`` (…, K) and a packed weight (N, K).

    Each output row depends only on its own input row, so results do not change with how many
    rows are batched together.
    """
    flat = x.reshape(-1, x.shape[-1])
    out = _built[0].skinny_linear(flat, weight, scales, bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _built[0].rms_norm(x, weight, eps)


def rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (…, tokens, heads · head_dim), contiguous, in place; cos/sin (tokens, d)."""
    _built[0].rope_(x, cos, sin)
    return x


def paged_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    slots: torch.Tensor,
    lengths: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Each query row i of q (tokens, heads, d) against the first ``lengths[i]`` of ``slots[i]``."""
    return _built[0].paged_attention(q, keys, values, slots, lengths, scale)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return _built[0].silu_mul(gate, up)


def layer_stack(
    layers: list[list[torch.Tensor]], eps: float, heads: int, kv_heads: int, head_dim: int
) -> object:
    """A C++ decoder stack over these per-layer tensors (see ``LayerStack`` in the source)."""
    return _built[0].LayerStack(layers, eps, heads, kv_heads, head_dim)
