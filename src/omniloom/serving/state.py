"""What the routes share: settings, the loaded model, the engine and metrics.

``submit`` checks capacity and hands a job to the engine's worker thread; ``events`` bridges
its events back to asyncio through a queue, and leaving that iterator early (a client that
disconnected, or the per-request time limit) cancels the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from omniloom.config import Settings
from omniloom.engine.engine import Done, Engine, Event, Failed, Job
from omniloom.engine.sampling import SamplingParams
from omniloom.engine.sequence import JobStats
from omniloom.errors import InvalidRequest, RateLimited, RequestTimedOut, ServiceUnavailable
from omniloom.models.familiarity import Familiarity
from omniloom.models.registry import LoadedModel
from omniloom.perception.cascade import PerceptionCascade
from omniloom.perception.image_safety import ImageSafety
from omniloom.perception.ocr import OcrEngine
from omniloom.processing.prompt import Prompt
from omniloom.serving import logs
from omniloom.serving.auth import KeyRecord, KeyStore
from omniloom.serving.metrics import Metrics
from omniloom.serving.requests import default_perception
from omniloom.speech.asr import Transcriber
from omniloom.speech.tts import Synthesizer

log = logging.getLogger(__name__)


@dataclass
class Submitted:
    job: Job | None  # set once the engine has accepted it
    queue: asyncio.Queue
    key: KeyRecord | None
    deadline: float  # event-loop time after which the job is stopped
    request_id: str


@dataclass
class ServerState:
    settings: Settings
    model: LoadedModel
    engine: Engine
    metrics: Metrics = field(default_factory=Metrics)
    keys: KeyStore | None = None
    _cascade: PerceptionCascade | None = None
    _image_safety: ImageSafety | None = None
    _perception_lock: threading.Lock = field(default_factory=threading.Lock)
    _transcriber: Transcriber | None = None
    _synthesizer: Synthesizer | None = None
    _speech_lock: threading.Lock = field(default_factory=threading.Lock)

    def transcriber(self) -> Transcriber:
        """The speech recogniser, loaded on first use."""
        with self._speech_lock:
            if self._transcriber is None:
                path = self.settings.asr_model or None
                self._transcriber = Transcriber(path, threads=self.settings.thread_count)
            return self._transcriber

    def synthesizer(self) -> Synthesizer:
        """The speech synthesiser, loaded on first use."""
        with self._speech_lock:
            if self._synthesizer is None:
                path = self.settings.tts_voice or None
                self._synthesizer = Synthesizer(path, threads=self.settings.thread_count)
            return self._synthesizer

    def cascade_for(self, requested: str | None) -> PerceptionCascade | None:
        """The perception cascade if this request's mode needs it; built at start-up when the
        server's default mode needs it (``runtime.build_state``), else on first use."""
        mode = requested or default_perception(self.model, self.settings)
        encoder = self.model.cascade_encoder
        if encoder is None:
            if mode != "native":
                raise InvalidRequest(
                    f"perception '{mode}' needs the perception cascade, which only "
                    f"omniloom-smol has; model '{self.model.name}' takes images natively.",
                    param="perception",
                )
            return None
        if mode == "native" and not self.settings.scan_media_text:
            return None
        with self._perception_lock:
            if self._cascade is None:
                self._cascade = PerceptionCascade(
                    encoder, OcrEngine(), familiarity=self._familiarity()
                )
        return self._cascade

    def _familiarity(self) -> Familiarity | None:
        bank = self.model.familiarity_bank
        return None if bank is None else Familiarity(bank, self.settings.familiar_threshold)

    @property
    def cascade_loaded(self) -> bool:
        return self._cascade is not None

    def image_safety(self) -> ImageSafety | None:
        """The image safety classifier, built on first use, when the policy is not ``off``."""
        policy = self.settings.image_safety
        if policy == "off":
            return None
        with self._perception_lock:
            if self._image_safety is None:
                threshold = self.settings.image_safety_threshold
                self._image_safety = ImageSafety(policy, threshold)
        return self._image_safety

    def check_capacity(self) -> None:
        """Refuse new work with 429 when the engine's queue is at its bound."""
        waiting, bound = self.engine.queue_depth(), self.settings.limits.max_queued_requests
        if waiting >= bound:
            per_batch = max(1, self.settings.engine.max_batch)
            raise RateLimited(
                f"The server is at capacity ({waiting} requests queued); retry shortly.",
                retry_after=1 + waiting / per_batch,
                code="queue_full",
            )

    def submit(
        self,
        prompt: Prompt,
        params: SamplingParams,
        key: KeyRecord | None = None,
        request_id: str = "",
    ) -> Submitted:
        """Queue a job now (or refuse it with 429); its events are read with ``events``. Its
        tokens and timings are recorded when it is done, whether or not anyone still reads."""
        self.check_capacity()  # no await between this check and the submit: no race
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.limits.request_timeout_s
        submitted = Submitted(None, asyncio.Queue(), key, deadline, request_id)

        def deliver(event: Event) -> None:  # on the event loop
            submitted.queue.put_nowait(event)
            if isinstance(event, Done):
                self._record(submitted, event)

        def emit(event: Event) -> None:  # on the engine thread
            with contextlib.suppress(RuntimeError):  # a closed event loop: nobody listens
                loop.call_soon_threadsafe(deliver, event)

        submitted.job = self.engine.submit(Job(prompt, params, emit=emit))
        self.refresh_engine_gauges()
        return submitted

    async def events(self, submitted: Submitted) -> AsyncIterator[Event]:
        """The job's events; leaving early (a client that disconnected, or the time limit)
        cancels the job, and the engine frees its KV blocks at its next step."""
        started = False
        try:
            while True:
                event = await self._next_event(submitted, started)
                if isinstance(event, Failed):
                    raise event.error
                yield event
                started = True
                if isinstance(event, Done):
                    return
        finally:
            submitted.job.cancelled.set()

    async def _next_event(self, submitted: Submitted, started: bool) -> Event:
        remaining = submitted.deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(submitted.queue.get(), timeout=max(0.0, remaining))
        except TimeoutError:
            self.metrics.timeouts.labels("running" if started else "waiting").inc()
            raise self._timed_out(started) from None

    def _timed_out(self, started: bool) -> ServiceUnavailable | RequestTimedOut:
        """503 when the request never produced a token (the server is too busy), else 504."""
        limit = self.settings.limits.request_timeout_s
        if not started:
            return ServiceUnavailable(
                f"The request did not start within the server's {limit:g} s limit "
                "(the server is busy); retry shortly.",
                retry_after=1 + self.engine.queue_depth() / max(1, self.settings.engine.max_batch),
                code="queue_timeout",
            )
        return RequestTimedOut(
            f"The generation ran past the server's {limit:g} s limit and was stopped; "
            "ask for fewer tokens (max_tokens) or stream the response."
        )

    def _record(self, submitted: Submitted, done: Done) -> None:
        stats, m, prompt = done.stats, self.metrics, submitted.job.prompt
        if submitted.key is not None and self.keys is not None:
            self.keys.charge_tokens(submitted.key, stats.prompt_tokens + stats.completion_tokens)
        m.ttft.observe(stats.time_to_first_token)
        m.encoder_seconds.observe(stats.encoder_seconds)
        m.completion_tokens.inc(stats.completion_tokens)
        m.cached_prompt_tokens.inc(stats.cached_tokens)
        m.preemptions.inc(stats.preemptions)
        for modality, count in prompt.tokens_by_modality().items():
            m.prompt_tokens.labels(modality).inc(count)
        for modality, runs in stats.encoder_runs.items():
            m.encoder_items.labels(modality).inc(runs)
        for modality, hits in stats.encoder_cache_hits.items():
            m.encoder_cache_hits.labels(modality).inc(hits)
        self.refresh_engine_gauges()
        _log_completion(submitted, stats)

    def refresh_engine_gauges(self) -> None:
        m = self.metrics
        m.queue_depth.set(self.engine.queue_depth())
        m.running.set(self.engine.running())
        m.kv_usage.set(self.engine.kv_usage())


def _log_completion(submitted: Submitted, stats: JobStats) -> None:
    """Token accounting and timing for one finished job; media appear as hash and size only."""
    spans = submitted.job.prompt.spans
    logs.event(
        log,
        "completion",
        request_id=submitted.request_id,
        prompt_tokens=submitted.job.prompt.tokens_by_modality(),
        completion_tokens=stats.completion_tokens,
        cached_tokens=stats.cached_tokens,
        queue_seconds=round(stats.queue_seconds, 4),
        time_to_first_token=round(stats.time_to_first_token, 4),
        total_seconds=round(stats.total_seconds, 4),
        media=[
            {"modality": s.modality, "sha256": s.item.content_hash[:16], "tokens": s.length}
            for s in spans
        ],
    )
