"""Assemble a running stack (settings → model → engine → server state) for the CLI and tests."""

from __future__ import annotations

import logging
import os

from omniloom.config import Settings
from omniloom.engine.engine import Engine
from omniloom.models.registry import load_model
from omniloom.serving.state import ServerState

log = logging.getLogger(__name__)


def default_threads(settings: Settings) -> int:
    return settings.threads or len(os.sched_getaffinity(0))


def build_state(settings: Settings, weights: str | None = None) -> ServerState:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    model = load_model(settings.model_name, weights=weights, dtype=settings.dtype)
    log.info("loaded %s (%s)", model.name, model.vlm.dtype)
    return ServerState(settings, model, Engine(model, threads=default_threads(settings)))
