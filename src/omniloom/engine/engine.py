"""The engine: continuous batching over a paged KV pool, on one worker thread.

Every step the scheduler (1) drops cancelled work, (2) admits waiting sequences first come
first served while the batch and the KV pool have room — encoding the media of everything
admitted together in one encoder call, and re-using cached KV blocks for any prefix already
seen — (3) plans one forward pass: every decoding sequence adds its last token, then prompts
add chunks until ``step_tokens`` is spent, so a long media prompt never stalls the decodes,
(4) runs it and samples the sequences that reached the end of their pending tokens. When a
sequence needs a block and none is left, the most recently admitted sequence is preempted: it
gives its blocks back and later recomputes (its full blocks usually come back from the cache).
A request with ``n`` choices prefills once; its other choices then join and hit that KV.

Faults stay with the request that caused them: a job whose sequence cannot be built, embedded,
run or sampled fails alone (its client gets the error) while the rest of the batch goes on —
a failed batched forward pass is retried sequence by sequence to find the culprit. Should the
loop itself die, ``failure`` records why, every waiting client is told, and ``health`` reports
it so that the server can exit for its supervisor to restart it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import torch

from omniloom.config import EngineSettings
from omniloom.engine.blocks import BlockAllocator, chain_hash, root_hash
from omniloom.engine.encoder_cache import EncoderCache
from omniloom.engine.grammar import GrammarCompiler
from omniloom.engine.sequence import (
    Delta,
    Done,
    Event,
    Failed,
    Finished,
    Job,
    JobRun,
    Sequence,
    TokenLogprob,
)
from omniloom.errors import ServiceUnavailable
from omniloom.models.backbones.paged_kv import KVPool, PagedBatch, SequenceChunk
from omniloom.models.lora import lora_layers, set_lora_active
from omniloom.models.registry import LoadedModel

__all__ = ["Delta", "Done", "Engine", "Event", "Failed", "Finished", "Job"]

log = logging.getLogger(__name__)


def _last_hash(seq: Sequence) -> bytes:
    """The hash the sequence's next full block chains from (the adapter's root at first)."""
    return seq.hashes[-1] if seq.hashes else root_hash("adapter" if seq.lora else "base")


class Engine:
    def __init__(
        self,
        model: LoadedModel,
        settings: EngineSettings | None = None,
        threads: int = 0,
        start: bool = True,
    ):
        self.model = model
        self.settings = settings or EngineSettings()
        self.encoder_cache = EncoderCache(self.settings.encoder_cache_mb << 20)
        self.grammars = GrammarCompiler.for_model(model)
        if threads > 0:
            torch.set_num_threads(threads)
        self.pool = self._make_pool()
        self._lora = lora_layers(model.vlm.backbone)  # switched every step: collect once
        self._lora_active: bool | torch.Tensor | None = None
        self.blocks = BlockAllocator(self.pool.num_blocks)
        self._inbox: queue.Queue[Job | None] = queue.Queue()
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._thread = None
        self.failure: BaseException | None = None  # why the loop died, once it has
        if start:
            self._thread = threading.Thread(target=self.run_forever, name="engine", daemon=True)
            self._thread.start()

    def _make_pool(self) -> KVPool:
        cfg, dtype = self.model.vlm.backbone.config, self.model.vlm.dtype
        bs = self.settings.block_size
        per_block = KVPool.bytes_per_block(
            cfg.num_layers, bs, cfg.num_kv_heads, cfg.dim_per_head, dtype
        )
        one_context = -(-self.model.context_length // bs) + 1
        num_blocks = max((self.settings.kv_cache_mb << 20) // per_block, one_context)
        return KVPool(
            cfg.num_layers, num_blocks, bs, cfg.num_kv_heads, cfg.dim_per_head, dtype,
            self.model.vlm.device,
        )  # fmt: skip

    # -- the outside world ------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        if self.failure is not None:
            raise self._unavailable()
        self._inbox.put(job)
        return job

    def health(self) -> str | None:
        """None while the loop can serve; else why it cannot."""
        if self.failure is not None:
            return f"the engine loop died: {type(self.failure).__name__}: {self.failure}"
        if self._thread is not None and not self._thread.is_alive():
            return "the engine thread has stopped"
        return None

    def _unavailable(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            "The server's engine has failed and is restarting; retry shortly.",
            code="engine_failed",
        )

    def queue_depth(self) -> int:
        """Requests accepted but not yet running (called from other threads: snapshot first)."""
        waiting = tuple(self._waiting)  # one C-level copy under the GIL
        return self._inbox.qsize() + len({id(s.run) for s in waiting})

    def running(self) -> int:
        return len(self._running)

    def kv_usage(self) -> float:
        return self.blocks.used() / self.blocks.num_blocks

    def shutdown(self) -> None:
        """Stop the loop after the step in progress (waits for it when it runs in a thread)."""
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def run_to_completion(self, *jobs: Job) -> None:
        """Submit ``jobs`` and return when all are done (the CLI and benchmarks). Without a
        worker thread, the engine steps on the calling thread until then."""
        finished = threading.Semaphore(0)
        for job in jobs:
            job.emit = _relay_ending(job.emit, finished)
            self.submit(job)
        remaining = len(jobs)
        while remaining:
            if finished.acquire(blocking=self._thread is not None):
                remaining -= 1
            elif not self._collect_jobs():
                return  # shut down
            else:
                self.step()

    # -- the loop ---------------------------------------------------------------------------

    def run_forever(self) -> None:
        """The engine loop, until ``shutdown``. ``omniloom serve`` runs it on the main thread:
        PyTorch's CPU kernels run about half as fast from other threads here (measured).
        It survives any ``Exception``; anything that still ends it is recorded in ``failure``,
        every job it holds fails with 503, and it is raised again for the caller to exit."""
        try:
            while self._collect_jobs():
                self._step_surviving_faults()
        except BaseException as exc:
            self.failure = exc
            log.critical("the engine loop died; failing every request it held", exc_info=exc)
            self._fail_all(self._unavailable(), drain_inbox=True)
            raise

    def _step_surviving_faults(self) -> None:
        try:
            self.step()
        except Exception as exc:
            log.exception("engine step failed outside any one request; failing the batch")
            self._fail_all(exc)

    def _collect_jobs(self) -> bool:
        """Move submitted jobs into the waiting queue; block only when there is nothing to do."""
        idle = not (self._waiting or self._running)
        while True:
            try:
                job = self._inbox.get(block=idle)
            except queue.Empty:
                return True
            if job is None:
                return False
            self._accept(job)
            idle = False

    def _accept(self, job: Job) -> None:
        """Queue the job's first sequence; a job that cannot even be built fails alone."""
        try:
            self._waiting.append(self._new_sequence(JobRun(job), 0))
        except Exception as exc:
            log.exception("could not start a request; failing it alone")
            self._tell_failed(job, exc)

    def _new_sequence(self, run: JobRun, index: int) -> Sequence:
        net = self.model.vlm
        positions = net.prompt_positions(run.job.prompt)
        seq = Sequence(run, index, self.model.tokenizer, net.backbone.config.vocab_size)
        seq.prompt_positions, seq.position_delta = positions, net.position_delta(positions)
        return seq

    @torch.inference_mode()
    def step(self) -> None:
        self._drop_cancelled()
        self._admit()
        plan = self._plan()
        if not plan:
            return
        plan, logits = self._forward_isolating_faults(plan)
        argmax = self._greedy_argmax(plan, logits)
        for row, (seq, count) in enumerate(plan):
            if seq.run.failed:  # another choice of its request failed earlier in this loop
                continue
            seq.computed += count
            self._register_full_blocks(seq)
            if seq.pending == 0:
                self._sample_isolating_faults(seq, logits[row : row + 1], argmax[row])

    # -- admission --------------------------------------------------------------------------

    def _admit(self) -> None:
        admitted: list[Sequence] = []
        while self._waiting and len(self._running) + len(admitted) < self.settings.max_batch:
            seq = self._waiting[0]
            if not self._fits(seq, admitted):
                break
            self._waiting.popleft()
            admitted.append(seq)
        admitted = self._embed_isolating_faults(admitted)
        for seq in admitted:
            self._match_prefix(seq)
            self._running.append(seq)

    def _embed_isolating_faults(self, admitted: list[Sequence]) -> list[Sequence]:
        """Embed all together; if that fails, one by one, failing only the requests that fail."""
        try:
            self._embed_prompts([s for s in admitted if s.prompt_embeds is None])
            return admitted
        except Exception:
            log.exception("batched media encoding failed; retrying request by request")
        survivors = []
        for seq in admitted:
            try:
                if seq.prompt_embeds is None:
                    self._embed_prompts([seq])
                survivors.append(seq)
            except Exception as exc:
                log.exception("media encoding failed for one request")
                self._fail_run(seq.run, exc)
        return survivors

    def _fits(self, seq: Sequence, admitted: list[Sequence]) -> bool:
        """Room for the whole of its tokens, plus a block of growth for each running sequence."""
        bs = self.settings.block_size
        need = sum(-(-len(s.tokens) // bs) for s in (*admitted, seq))
        return need + len(self._running) <= self.blocks.available() or not (
            self._running or admitted
        )

    def _embed_prompts(self, seqs: list[Sequence]) -> None:
        """Prompt embeddings; all media not in the encoder cache goes through one encoder call."""
        if not seqs:
            return
        net, start = self.model.vlm, time.perf_counter()
        spans = [span for s in seqs for span in s.job.prompt.spans]
        given = {key: e for s in seqs for key, e in s.job.encoded.items()}
        for key, done in given.items():
            self.encoder_cache.put(key, done.embeddings)
        missing = {sp.key: sp for sp in spans if self.encoder_cache.get(sp.key) is None}
        encoded = net.encode([sp.item for sp in missing.values()])
        for key, embeddings in zip(missing, encoded, strict=True):
            self.encoder_cache.put(key, embeddings)
        ran = set(missing) | {key for key, done in given.items() if not done.cached}
        for seq in seqs:
            stats = seq.run.stats
            for span in seq.job.prompt.spans:
                counter = stats.encoder_runs if span.key in ran else stats.encoder_cache_hits
                counter[span.modality] += 1
                ran.discard(span.key)
            media = [self.encoder_cache.get(span.key) for span in seq.job.prompt.spans]
            seq.prompt_embeds = net.embed_prompt(seq.job.prompt, media)
            stats.encoder_seconds = time.perf_counter() - start
            stats.queue_seconds = time.perf_counter() - seq.job.submitted_at

    def _match_prefix(self, seq: Sequence) -> None:
        """Take every leading full block already in the cache (always leaving one token to run)."""
        bs = self.settings.block_size
        parent = _last_hash(seq)
        for index in range(len(seq.blocks), (len(seq.tokens) - 1) // bs):
            block_hash = chain_hash(parent, seq.keys[index * bs : (index + 1) * bs])
            block = self.blocks.lookup(block_hash)
            if block is None:
                break
            seq.blocks.append(block)
            seq.hashes.append(block_hash)
            parent = block_hash
        seq.computed = len(seq.blocks) * bs
        stats = seq.run.stats
        if seq.index == 0 and not stats.preemptions:  # a recompute's own blocks do not count
            stats.cached_tokens = seq.computed

    def _register_full_blocks(self, seq: Sequence) -> None:
        bs = self.settings.block_size
        parent = _last_hash(seq)
        for index in range(len(seq.hashes), seq.computed // bs):
            parent = chain_hash(parent, seq.keys[index * bs : (index + 1) * bs])
            self.blocks.register(seq.blocks[index], parent)
            seq.hashes.append(parent)

    # -- planning and preemption --------------------------------------------------------------

    def _plan(self) -> list[tuple[Sequence, int]]:
        """(sequence, tokens to run) for this step: decodes first, then prefill chunks, FCFS."""
        budget = self.settings.step_tokens
        plan: list[tuple[Sequence, int]] = []
        ordered = sorted(self._running, key=lambda s: s.pending > 1)  # stable: FCFS within
        for seq in ordered:
            if seq not in self._running or budget == 0:
                continue
            count = min(seq.pending, budget)
            if not self._reserve(seq, seq.computed + count, plan):
                continue
            plan.append((seq, count))
            budget -= count
        return plan

    def _reserve(self, seq: Sequence, length: int, plan: list) -> bool:
        """Blocks for ``length`` tokens of ``seq``, preempting later arrivals if need be."""
        bs = self.settings.block_size
        while len(seq.blocks) * bs < length:
            block = self.blocks.allocate()
            if block is not None:
                seq.blocks.append(block)
                continue
            victim = self._running[-1]
            self._preempt(victim, plan)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence, plan: list) -> None:
        self._release_blocks(seq)
        seq.computed = 0
        self._running.remove(seq)
        plan[:] = [(s, c) for s, c in plan if s is not seq]
        self._waiting.appendleft(seq)
        seq.run.stats.preemptions += 1

    def _release_blocks(self, seq: Sequence) -> None:
        for block in seq.blocks:
            self.blocks.release(block)
        seq.blocks, seq.hashes = [], []

    # -- the forward pass and sampling --------------------------------------------------------

    def _forward_isolating_faults(self, plan: list) -> tuple[list, torch.Tensor | None]:
        """Run the plan as one pass; if that fails, sequence by sequence, failing only the
        requests whose own pass fails. Returns the plan that ran and its logits."""
        try:
            return plan, self._forward(plan)
        except Exception:
            log.exception("batched forward pass failed; retrying sequence by sequence")
        survivors, rows = [], []
        for seq, count in plan:
            if seq.run.failed:
                continue
            try:
                rows.append(self._forward([(seq, count)]))
                survivors.append((seq, count))
            except Exception as exc:
                log.exception("forward pass failed for one request")
                self._fail_run(seq.run, exc)
        return survivors, torch.cat(rows) if rows else None

    def _sample_isolating_faults(self, seq: Sequence, logits, argmax: int | None) -> None:
        try:
            self._sample(seq, logits, argmax)
        except Exception as exc:
            log.exception("sampling failed for one request; failing it alone")
            self._fail_run(seq.run, exc)

    def _forward(self, plan: list[tuple[Sequence, int]]) -> torch.Tensor:
        """Run the step's tokens as one packed row; next-token logits per planned sequence."""
        backbone = self.model.vlm.backbone
        chunks = [
            SequenceChunk(
                self.pool.slots(seq.blocks, seq.computed + count),
                count,
                seq.positions(seq.computed, seq.computed + count),
            )
            for seq, count in plan
        ]
        batch = PagedBatch(self.pool, chunks)
        self._switch_lora(plan)
        embeds = self._step_embeds(plan)
        hidden = backbone.hidden_states(embeds.unsqueeze(0).to(self.model.vlm.dtype), batch)
        return backbone.lm_head(hidden[0, batch.last_token_rows()]).float()

    def _step_embeds(self, plan: list[tuple[Sequence, int]]) -> torch.Tensor:
        """The step's input embeddings in plan order; every generated token (the decodes) is
        looked up in one call, prompt chunks come from their prompt embeddings."""
        embed_ids = self.model.vlm.embed_ids
        generated = [seq.computed >= seq.prompt_len for seq, _ in plan]
        chunks = [(seq, count) for (seq, count), g in zip(plan, generated, strict=True) if g]
        ids = [t for seq, count in chunks for t in seq.tokens[seq.computed : seq.computed + count]]
        looked_up = iter(embed_ids(torch.tensor(ids)).split([c for _, c in chunks]) if ids else ())
        return torch.cat(
            [
                next(looked_up)
                if g
                else seq.input_embeds(seq.computed, seq.computed + n, embed_ids)
                for (seq, n), g in zip(plan, generated, strict=True)
            ]
        )

    @staticmethod
    def _greedy_argmax(plan: list[tuple[Sequence, int]], logits: torch.Tensor) -> list:
        """Each row's argmax in one call when some row that ends its pending tokens this step
        samples greedily from its raw logits (else ``None`` per row: the samplers need none)."""
        if any(seq.pending == count and seq.sampler.plain_greedy for seq, count in plan):
            return logits.argmax(dim=-1).tolist()
        return [None] * len(plan)

    def _switch_lora(self, plan: list[tuple[Sequence, int]]) -> None:
        """Adapters on for media prompts' tokens only: all on, all off, or a per-token mask."""
        flags = {seq.lora for seq, _ in plan}
        if len(flags) == 1:
            active = flags.pop()
            if active is self._lora_active:
                return
        else:
            rows = [torch.full((count,), float(seq.lora)) for seq, count in plan]
            active = torch.cat(rows)[None, :, None]
        set_lora_active(self._lora, active)
        self._lora_active = active

    def _sample(self, seq: Sequence, logits: torch.Tensor, argmax: int | None) -> None:
        run = seq.run
        if not run.forks_made:  # the prompt is in the cache now: the other choices join
            run.forks_made = True
            for index in range(1, seq.job.params.n):
                fork = self._new_sequence(run, index)
                fork.prompt_embeds = seq.prompt_embeds
                self._waiting.appendleft(fork)
        token = seq.sampler(logits, argmax)
        run.first_token()
        seq.append(token)
        logprobs = self._logprobs(seq, logits, token)
        if token in seq.stop_ids:
            self._emit_text(seq, seq.detok.flush(), logprobs)
            return self._finish(seq, "stop")
        self._emit_text(seq, seq.detok.push(token), logprobs)
        if seq.detok.stopped:
            return self._finish(seq, "stop")
        if seq.generated >= seq.job.params.max_tokens:
            self._emit_text(seq, seq.detok.flush(), [])
            self._finish(seq, "length")

    @staticmethod
    def _logprobs(seq: Sequence, logits: torch.Tensor, token: int) -> list[TokenLogprob]:
        k = seq.job.params.logprobs
        if k is None:
            return []
        logprobs = torch.log_softmax(logits[0], dim=-1)
        top = logprobs.topk(k) if k else None
        pairs = list(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if k else []
        return [TokenLogprob(token, float(logprobs[token]), pairs)]

    @staticmethod
    def _emit_text(seq: Sequence, text: str, logprobs: list[TokenLogprob]) -> None:
        if text or logprobs:
            seq.job.emit(Delta(seq.index, text, logprobs))

    def _finish(self, seq: Sequence, reason: str) -> None:
        self._release_blocks(seq)
        if seq in self._running:
            self._running.remove(seq)
        run = seq.run
        run.stats.completion_tokens += seq.generated
        seq.job.emit(Finished(seq.index, reason, seq.generated))
        run.unfinished -= 1
        if not run.forks_made and reason == "cancelled":
            for index in range(1, seq.job.params.n):
                seq.job.emit(Finished(index, reason, 0))
            run.unfinished, run.forks_made = 0, True
        if run.unfinished == 0:
            run.stats.total_seconds = time.perf_counter() - seq.job.submitted_at
            seq.job.emit(Done(run.stats))

    def _drop_cancelled(self) -> None:
        for seq in [*self._running, *self._waiting]:
            if seq.job.cancelled.is_set():
                if seq in self._waiting:
                    self._waiting.remove(seq)
                self._finish(seq, "cancelled")

    def _fail_run(self, run: JobRun, exc: BaseException) -> None:
        """Fail one request: all its choices leave the batch and give back their blocks."""
        if run.failed:
            return
        run.failed = True
        for seq in [s for s in [*self._running, *self._waiting] if s.run is run]:
            self._release_blocks(seq)
            if seq in self._running:
                self._running.remove(seq)
            else:
                self._waiting.remove(seq)
        self._tell_failed(run.job, exc)

    @staticmethod
    def _tell_failed(job: Job, exc: BaseException) -> None:
        try:
            job.emit(Failed(exc))
        except Exception:
            log.exception("could not tell a failed request's client")

    def _fail_all(self, exc: BaseException, drain_inbox: bool = False) -> None:
        """Fail every request held (and those not yet collected, when the loop is ending)."""
        runs = {id(s.run): s.run for s in [*self._running, *self._waiting]}
        for run in runs.values():
            self._fail_run(run, exc)
        while drain_inbox and not self._inbox.empty():
            job = self._inbox.get_nowait()
            if job is not None:
                self._tell_failed(job, exc)


def _relay_ending(emit: Callable[[Event], None], finished: threading.Semaphore):
    """``emit``, which also releases ``finished`` when the job is done or has failed."""

    def relay(event: Event) -> None:
        emit(event)
        if isinstance(event, Done | Failed):
            finished.release()

    return relay
