"""Engines whose LLM step runs elsewhere: the face ``ServerState`` expects of an engine.

The server hands an engine jobs with ``submit`` and reads its gauges; ``Engine`` runs them on
its own worker thread. An engine here runs each job as an asyncio task on the server's event
loop that streams the job's events from somewhere else — a Ray Serve pool
(``cluster/remote_engine.py``) or an upstream OpenAI-compatible server (``upstream.py``) — and
hands them to the job as ``Engine`` would. A job whose stream raises fails alone, with the
error as its ``Failed`` event.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from omniloom.engine.sequence import Event, Failed, Job

log = logging.getLogger(__name__)


class RemoteJobEngine(ABC):
    grammars = None  # set by an engine that compiles response_format grammars

    def __init__(self) -> None:
        self._waiting = 0
        self._running = 0
        self._tasks: set[asyncio.Task] = set()
        self._stopped = threading.Event()

    @abstractmethod
    def events(self, job: Job) -> AsyncIterator[Event]:
        """The job's events, ending with ``Done`` (an async generator); raises to fail the job."""

    def submit(self, job: Job) -> Job:
        """Start the job; called on the server's event loop."""
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def queue_depth(self) -> int:
        """Jobs sent that have not produced their first event."""
        return self._waiting

    def running(self) -> int:
        return self._running

    def kv_usage(self) -> float:
        return float("nan")  # unknown here: the KV is held where the jobs run

    def health(self) -> str | None:
        return None  # a failing remote fails its jobs, not the server

    def run_forever(self) -> None:
        """Block until ``shutdown`` (``omniloom serve`` keeps its main thread here)."""
        self._stopped.wait()

    def shutdown(self) -> None:
        for task in list(self._tasks):
            task.get_loop().call_soon_threadsafe(task.cancel)
        self._stopped.set()

    async def _run(self, job: Job) -> None:
        self._waiting += 1
        started = False
        try:
            async for event in self.events(job):
                if not started:
                    started = True
                    self._waiting -= 1
                    self._running += 1
                job.emit(event)
        except Exception as exc:  # the job fails alone, as in the local engine
            log.info("remote job failed: %s", exc)
            job.emit(Failed(exc))
        finally:
            if started:
                self._running -= 1
            else:
                self._waiting -= 1
