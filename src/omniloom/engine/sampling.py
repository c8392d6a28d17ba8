"""Turn logits into next tokens: greedy, temperature and nucleus (top-p) sampling.

Each choice row has its own generator seeded from the request's ``seed`` plus the row index,
so a given seed always gives the same output, whatever else runs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-5


class Sampler:
    def __init__(self, params: SamplingParams, rows: int, device: torch.device | str = "cpu"):
        self.params = params
        base = params.seed if params.seed is not None else secrets.randbits(63)
        self.generators = [
            torch.Generator(device=device).manual_seed(base + i) for i in range(rows)
        ]

    def __call__(self, logits: torch.Tensor) -> list[int]:
        """``logits`` (rows, vocab) float32 → one token id per row."""
        if self.params.greedy:
            return logits.argmax(dim=-1).tolist()
        probs = self._filtered_probs(logits / self.params.temperature)
        return [
            int(torch.multinomial(probs[i], 1, generator=g)) for i, g in enumerate(self.generators)
        ]

    def _filtered_probs(self, logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, dim=-1)
        if self.params.top_p >= 1.0:
            return probs
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs[before >= self.params.top_p] = 0.0
        return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
