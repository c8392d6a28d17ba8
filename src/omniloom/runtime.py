"""Assemble a running stack (settings → model → engine → server state) for the CLI and tests."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path

from omniloom.config import Settings
from omniloom.engine.engine import Engine
from omniloom.engine.upstream import UpstreamEngine
from omniloom.models.quantize import weight_format_of
from omniloom.models.registry import LoadedModel, load_model
from omniloom.serving.auth import KeyStore
from omniloom.serving.state import ServerState

log = logging.getLogger(__name__)


def load_served_model(settings: Settings) -> LoadedModel:
    """The model ``settings`` name (``model``: a checkpoint; empty: the embedded default)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    model = load_model(
        settings.model_name or None,
        weights=settings.model or None,
        dtype=settings.dtype,
        chat_template=Path(settings.chat_template).read_text() if settings.chat_template else None,
        cache_dir=settings.weight_cache_dir,
    )
    if settings.max_model_len:
        model.context_length = min(model.context_length, settings.max_model_len)
    stored = weight_format_of(model.vlm.backbone)
    log.info("loaded %s (%s weights, context %d)", model.name, stored, model.context_length)
    return model


def build_state(
    settings: Settings, weights: str | None = None, start_engine: bool = True
) -> ServerState:
    if weights:
        settings = dataclasses.replace(settings, model=weights)
    model = load_served_model(settings)
    if settings.upstream:
        return server_state(*_gateway(settings, model))
    engine = Engine(model, settings.engine, settings.thread_count, start=start_engine)
    return server_state(settings, model, engine)


def _gateway(settings: Settings, model: LoadedModel):
    """Gateway mode: the upstream server runs the LLM step, media reach it as words."""
    if settings.perception != "cascade":
        settings = dataclasses.replace(settings, perception="cascade")
    timeout = settings.limits.request_timeout_s
    name = settings.upstream_model or model.name
    engine = UpstreamEngine(settings.upstream, model.tokenizer, name, timeout)
    return settings, model, engine


def server_state(settings: Settings, model: LoadedModel, engine) -> ServerState:
    """The routes' state around ``engine`` (this process's ``Engine``, or a cluster's)."""
    state = ServerState(settings, model, engine, keys=KeyStore.from_file(settings.api_keys_file))
    state.cascade_for(None)  # the default mode's OCR loads now, not on the first image request
    return state


class BackgroundServer:
    """The real HTTP server on a free loopback port, in a thread (for eval and benchmarks)."""

    def __init__(self, state: ServerState, host: str = "127.0.0.1"):
        import socket

        from omniloom.serving.http import make_server

        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        self.state = state
        self.server = make_server(state, host, port, log_level="warning")
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
