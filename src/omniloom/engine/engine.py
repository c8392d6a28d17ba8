"""A single worker thread that runs generation jobs and streams their events back.

One job at a time: encode the request's media, prefill its prompt once, then decode its ``n``
choices together as one batch sharing the prompt's KV cache. Callers submit a ``Job`` and read
``Event``s through the job's ``emit`` callback; a cancelled job stops at the next step.
(Continuous batching across requests replaces this loop in the engine issue.)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from omniloom.engine.detokenizer import IncrementalDetokenizer
from omniloom.engine.encoder_cache import EncoderCache
from omniloom.engine.grammar import GrammarCompiler
from omniloom.engine.sampling import Sampler, SamplingParams
from omniloom.models.lora import set_lora_active
from omniloom.models.registry import LoadedModel
from omniloom.processing.prompt import Prompt

log = logging.getLogger(__name__)


@dataclass
class Delta:
    index: int
    text: str


@dataclass
class Finished:
    index: int
    reason: str  # "stop" | "length" | "cancelled"
    completion_tokens: int


@dataclass
class JobStats:
    prompt_tokens: int
    completion_tokens: int = 0
    encoder_seconds: float = 0.0
    encoder_runs: Counter[str] = field(default_factory=Counter)  # per modality
    encoder_cache_hits: Counter[str] = field(default_factory=Counter)
    prefill_seconds: float = 0.0
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
class Job:
    prompt: Prompt
    params: SamplingParams
    emit: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted_at: float = field(default_factory=time.perf_counter)


class Engine:
    def __init__(self, model: LoadedModel, threads: int = 0, encoder_cache_bytes: int = 256 << 20):
        self.model = model
        self.encoder_cache = EncoderCache(encoder_cache_bytes)
        self.grammars = GrammarCompiler(
            model.tokenizer.vocab_list(),
            sorted(model.tokenizer.stop_ids),
            model.vlm.backbone.config.vocab_size,
        )
        if threads > 0:
            torch.set_num_threads(threads)
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="omniloom-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        self._jobs.put(job)
        return job

    def queue_depth(self) -> int:
        return self._jobs.qsize()

    def shutdown(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                stats = self.generate(job)
                job.emit(Done(stats))
            except Exception as exc:
                log.exception("generation failed")
                job.emit(Failed(exc))

    def encode_media(self, prompt: Prompt, stats: JobStats) -> list[torch.Tensor]:
        """Projected embeddings per media span, from the cache when the same item was seen."""
        out = []
        for span in prompt.spans:
            embeddings = self.encoder_cache.get(span.key)
            if embeddings is None:
                embeddings = self.model.vlm.encode_tiles(span.item.tiles())
                self.encoder_cache.put(span.key, embeddings)
                stats.encoder_runs[span.modality] += 1
            else:
                stats.encoder_cache_hits[span.modality] += 1
            out.append(embeddings)
        return out

    @torch.inference_mode()
    def generate(self, job: Job) -> JobStats:
        """Run one job to completion, emitting deltas as they are decoded."""
        vlm, params = self.model.vlm, job.params
        stats = JobStats(prompt_tokens=len(job.prompt.token_ids))
        t0 = time.perf_counter()
        media = self.encode_media(job.prompt, stats)
        stats.encoder_seconds = time.perf_counter() - t0
        set_lora_active(vlm.backbone, bool(job.prompt.spans))  # the vision adapter
        embeds = vlm.embed_prompt(job.prompt, media).unsqueeze(0)
        cache = vlm.backbone.new_cache(1, embeds.shape[1] + params.max_tokens)
        logits = vlm.backbone(embeds, cache, last_only=True)[:, -1]
        stats.prefill_seconds = time.perf_counter() - t0 - stats.encoder_seconds
        if params.n > 1:
            cache = cache.expand(params.n)
            logits = logits.expand(params.n, -1)
        self._decode(job, cache, logits, stats)
        stats.total_seconds = time.perf_counter() - job.submitted_at
        return stats

    def _decode(self, job: Job, cache, logits: torch.Tensor, stats: JobStats) -> None:
        params, backbone = job.params, self.model.vlm.backbone
        sampler = Sampler(params, params.n, logits.device, job.prompt.token_ids, logits.shape[-1])
        detoks = [
            IncrementalDetokenizer(self.model.tokenizer, params.stop) for _ in range(params.n)
        ]
        generated = [0] * params.n
        active = list(range(params.n))
        stop_ids = self.model.tokenizer.stop_ids | params.stop_token_ids
        for step in range(params.max_tokens):
            tokens = sampler(logits)
            if step == 0:
                stats.time_to_first_token = time.perf_counter() - job.submitted_at
            for i in list(active):
                generated[i] += 1
                reason = self._advance(job, detoks[i], i, tokens[i], stop_ids)
                if reason:
                    active.remove(i)
                    job.emit(Finished(i, reason, generated[i]))
            if not active:
                break
            next_ids = torch.tensor(tokens, device=logits.device).unsqueeze(1)
            logits = backbone(backbone.embed(next_ids), cache)[:, -1]
        for i in active:
            self._emit_text(job, i, detoks[i].flush())
            job.emit(Finished(i, "length", generated[i]))
        stats.completion_tokens = sum(generated)

    def _advance(self, job, detok, index, token, stop_ids) -> str | None:
        """Feed one sampled token to a choice; return why it finished, if it did."""
        if job.cancelled.is_set():
            return "cancelled"
        if token in stop_ids:
            self._emit_text(job, index, detok.flush())
            return "stop"
        self._emit_text(job, index, detok.push(token))
        return "stop" if detok.stopped else None

    @staticmethod
    def _emit_text(job: Job, index: int, text: str) -> None:
        if text:
            job.emit(Delta(index, text))
