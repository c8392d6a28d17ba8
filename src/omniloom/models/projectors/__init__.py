"""Projectors map encoder features into the LLM's embedding space (linear, MLP, resampler)."""

from omniloom.models.projectors.linear import LinearProjector
from omniloom.models.projectors.mlp import MLPProjector
from omniloom.models.projectors.resampler import PerceiverResampler

PROJECTORS = {"linear": LinearProjector, "mlp": MLPProjector, "resampler": PerceiverResampler}


def build_projector(kind: str, in_dim: int, out_dim: int, cells: int, **kwargs):
    """``cells``: feature vectors per tile (the encoder's grid), each with a learned position."""
    if kind not in PROJECTORS:
        raise ValueError(f"unknown projector {kind!r}; choose from {sorted(PROJECTORS)}")
    return PROJECTORS[kind](in_dim, out_dim, cells, **kwargs)


__all__ = ["PROJECTORS", "LinearProjector", "MLPProjector", "PerceiverResampler", "build_projector"]
