"""Jobs as the engine runs them: one ``Sequence`` per choice, one ``JobRun`` per request.

A sequence's tokens are its prompt followed by what it has generated; ``computed`` of them
have keys/values in the paged pool (through its block table), the rest are ``pending`` and
go into the next forward passes — a whole prompt in chunks, or the one token just sampled.
A preempted sequence drops its blocks and its ``computed`` count and later runs all its tokens
again (recompute), keeping what it generated, its sampler and its detokenizer.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from omniloom.engine.blocks import token_keys
from omniloom.engine.detokenizer import IncrementalDetokenizer
from omniloom.engine.sampling import Sampler, SamplingParams
from omniloom.processing.prompt import Prompt


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]  # the most likely tokens at this step, best first


@dataclass
class Delta:
    index: int
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Finished:
    index: int
    reason: str  # "stop" | "length" | "cancelled"
    completion_tokens: int


@dataclass
class JobStats:
    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    preemptions: int = 0
    encoder_seconds: float = 0.0
    encoder_runs: Counter[str] = field(default_factory=Counter)  # per modality
    encoder_cache_hits: Counter[str] = field(default_factory=Counter)
    queue_seconds: float = 0.0
    time_to_first_token: float = 0.0
    total_seconds: float = 0.0


@dataclass
class Done:
    stats: JobStats


@dataclass
class Failed:
    error: BaseException


Event = Delta | Finished | Done | Failed


@dataclass
class Encoded:
    """A media span's embeddings made outside the engine (a cluster's encoder pool)."""

    embeddings: torch.Tensor
    cached: bool  # taken from that pool's cache rather than encoded for this job


@dataclass
class Job:
    prompt: Prompt
    params: SamplingParams
    emit: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)
    encoded: dict[str, Encoded] = field(default_factory=dict)  # by span key; the rest: encoded here


class JobRun:
    """Bookkeeping for one job while its choices run."""

    def __init__(self, job: Job):
        self.job = job
        self.stats = JobStats(prompt_tokens=len(job.prompt.token_ids))
        self.unfinished = job.params.n
        self.forks_made = job.params.n == 1
        self.failed = False  # set once the job has failed: its choices emit nothing more

    def first_token(self) -> None:
        if not self.stats.time_to_first_token:
            self.stats.time_to_first_token = time.perf_counter() - self.job.submitted_at


class Sequence:
    def __init__(self, run: JobRun, index: int, tokenizer, vocab_size: int):
        job = run.job
        self.run, self.index = run, index
        self.tokens: list[int] = list(job.prompt.token_ids)
        self.keys: list[int | str] = token_keys(job.prompt)  # what each position hashes as
        self.prompt_len = len(self.tokens)
        self.prompt_embeds: torch.Tensor | None = None  # (prompt_len, hidden), set on admission
        self.prompt_positions = torch.arange(self.prompt_len)  # (T,) or (axes, T): the model's
        self.position_delta = 0  # generated token i sits at position i + this
        self.lora = job.prompt.about_media  # a media adapter runs where media are in play
        self.computed = 0
        self.blocks: list[int] = []
        self.hashes: list[bytes] = []  # chained hash of each full block, in order
        self.generated = 0
        params = job.params
        self.sampler = Sampler(params, index, prompt_ids=self.tokens, vocab_size=vocab_size)
        self.detok = IncrementalDetokenizer(tokenizer, params.stop)
        eos = frozenset() if params.ignore_eos else tokenizer.stop_ids
        self.stop_ids = eos | params.stop_token_ids

    @property
    def job(self) -> Job:
        return self.run.job

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.computed

    def input_embeds(self, start: int, end: int, embed_ids) -> torch.Tensor:
        """Embeddings of positions [start, end): the prompt's (media included), then generated."""
        parts = []
        if start < self.prompt_len:
            parts.append(self.prompt_embeds[start : min(end, self.prompt_len)])
        if end > self.prompt_len:
            generated = torch.tensor(self.tokens[max(start, self.prompt_len) : end])
            parts.append(embed_ids(generated))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def positions(self, start: int, end: int) -> torch.Tensor:
        """Rotary positions of tokens [start, end): the prompt's, then generated ones'."""
        prompt = self.prompt_positions
        if end <= self.prompt_len:
            return prompt[..., start:end]
        first = max(start, self.prompt_len)
        generated = torch.arange(first, end) + self.position_delta
        generated = generated.expand(*prompt.shape[:-1], end - first)
        return torch.cat([prompt[..., start : self.prompt_len], generated], dim=-1)

    def append(self, token: int) -> None:
        self.tokens.append(token)
        self.keys.append(token)
        self.generated += 1
