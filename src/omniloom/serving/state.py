"""What the routes share: settings, the loaded model, the engine and metrics.

``run_job`` bridges the engine's worker thread to asyncio: events come back through a queue,
and leaving the iterator early (a client that disconnected) cancels the job.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from omniloom.config import Settings
from omniloom.engine.engine import Done, Engine, Event, Failed, Job
from omniloom.engine.sampling import SamplingParams
from omniloom.models.registry import LoadedModel
from omniloom.perception.cascade import PerceptionCascade
from omniloom.perception.ocr import OcrEngine
from omniloom.processing.prompt import Prompt
from omniloom.serving.metrics import Metrics


@dataclass
class ServerState:
    settings: Settings
    model: LoadedModel
    engine: Engine
    metrics: Metrics = field(default_factory=Metrics)
    _cascade: PerceptionCascade | None = None
    _cascade_lock: threading.Lock = field(default_factory=threading.Lock)

    def cascade_for(self, requested: str | None) -> PerceptionCascade | None:
        """The perception cascade, built on first use, if this request's mode needs it."""
        if (requested or self.settings.perception) == "native":
            return None
        with self._cascade_lock:
            if self._cascade is None:
                self._cascade = PerceptionCascade(self.model.vlm.encoder, OcrEngine())
        return self._cascade

    async def run_job(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        job = Job(prompt, params, emit=lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev))
        self.engine.submit(job)
        self.refresh_engine_gauges()
        try:
            while True:
                event = await events.get()
                if isinstance(event, Failed):
                    raise event.error
                yield event
                if isinstance(event, Done):
                    self._record(prompt, event)
                    return
        finally:
            job.cancelled.set()

    def _record(self, prompt: Prompt, done: Done) -> None:
        stats, m = done.stats, self.metrics
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

    def refresh_engine_gauges(self) -> None:
        m = self.metrics
        m.queue_depth.set(self.engine.queue_depth())
        m.running.set(self.engine.running())
        m.kv_usage.set(self.engine.kv_usage())
