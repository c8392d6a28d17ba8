"""``GET /health`` (liveness plus a little state) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from omniloom.serving.state import ServerState

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict:
    state: ServerState = request.app.state.omniloom
    return {"status": "ok", "model": state.model.name, "queue_depth": state.engine.queue_depth()}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.omniloom
    state.refresh_engine_gauges()
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
