"""Turn logits into next tokens.

Order of operations (as vLLM): repetition, presence and frequency penalties on the raw logits;
then greedy argmax, or temperature, top-k, top-p and min-p filtering and a draw. Each choice
choice has its own sampler and generator seeded from the request's ``seed`` plus the choice
index, so a given seed always gives the same output, whatever else runs beside it.
``SamplingParams`` pickle, grammar included, for the cluster's engine replicas.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, field

import torch
import xgrammar as xgr

from omniloom.engine.grammar import GrammarConstraint


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)
    ignore_eos: bool = False  # benchmarks: run to max_tokens whatever the model says
    grammar: xgr.CompiledGrammar | None = field(default=None, compare=False)
    logprobs: int | None = None  # None: off; k ≥ 0: the sampled token's plus the top k

    def __getstate__(self) -> dict:
        """Picklable (a cluster sends jobs between processes): the compiled grammar travels as
        xgrammar's own JSON form."""
        state = dict(self.__dict__)
        if self.grammar is not None:
            vocabulary = self.grammar.tokenizer_info.serialize_json()
            state["grammar"] = (self.grammar.serialize_json(), vocabulary)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("grammar"), tuple):
            grammar, vocabulary = state["grammar"]
            state["grammar"] = xgr.CompiledGrammar.deserialize_json(
                grammar, _vocabulary(vocabulary)
            )
        self.__dict__.update(state)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-5

    @property
    def penalised(self) -> bool:
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
        )


@functools.lru_cache(maxsize=4)
def _vocabulary(serialized: str) -> xgr.TokenizerInfo:
    """A grammar's tokenizer, rebuilt once per process (it is the same for every request)."""
    return xgr.TokenizerInfo.deserialize_json(serialized)


class Sampler:
    """One choice's sampler: its own generator (seed + choice index), penalties and grammar."""

    def __init__(
        self,
        params: SamplingParams,
        index: int = 0,
        device: torch.device | str = "cpu",
        prompt_ids: list[int] | None = None,
        vocab_size: int = 0,
    ):
        self.params = params
        base = params.seed if params.seed is not None else secrets.randbits(63)
        seed = (base + index) % 2**64  # any integer seed (and its choices) fits the generator
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.prompt_ids = torch.tensor(prompt_ids or [], dtype=torch.long, device=device)
        self.output: list[int] = []
        self.constraint = None
        if params.grammar is not None:
            self.constraint = GrammarConstraint(params.grammar, vocab_size)

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing to change the logits first (the argmax of the raw logits)."""
        return self.params.greedy and not self.params.penalised and self.constraint is None

    def __call__(self, logits: torch.Tensor, argmax: int | None = None) -> int:
        """``logits`` (1, vocab) float32 → the next token id (remembered for penalties).
        ``argmax``: the raw logits' argmax when the caller has it (a step computes them for all
        its rows at once), used only where it is the answer."""
        if self.params.penalised:
            logits = self._penalise(logits.clone())
        if self.constraint is not None:
            logits = self.constraint.mask(logits.clone())
        if self.plain_greedy and argmax is not None:
            token = argmax
        elif self.params.greedy:
            token = int(logits[0].argmax())
        else:
            probs = self._filtered_probs(logits / self.params.temperature)
            token = int(torch.multinomial(probs[0], 1, generator=self.generator))
        self.output.append(token)
        if self.constraint is not None:
            self.constraint.accept(token)
        return token

    def _penalise(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.params
        out = torch.tensor(self.output, dtype=torch.long, device=logits.device)
        if p.repetition_penalty != 1.0:
            seen = torch.unique(torch.cat([self.prompt_ids, out]))
            picked = logits[0, seen]
            logits[0, seen] = torch.where(
                picked > 0, picked / p.repetition_penalty, picked * p.repetition_penalty
            )
        if len(self.output):
            counts = torch.bincount(out, minlength=logits.shape[-1]).to(logits.dtype)
            logits[0] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0)
        return logits

    def _filtered_probs(self, logits: torch.Tensor) -> torch.Tensor:
        p = self.params
        if p.top_k > 0:
            kth = logits.topk(min(p.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if p.min_p > 0:
            probs = probs.masked_fill(probs < p.min_p * probs.max(dim=-1, keepdim=True).values, 0)
        if p.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            before = sorted_probs.cumsum(dim=-1) - sorted_probs
            sorted_probs[before >= p.top_p * sorted_probs.sum(-1, keepdim=True)] = 0.0
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        return probs
