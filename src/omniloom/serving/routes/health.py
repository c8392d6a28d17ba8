"""``GET /health`` (liveness plus a little state) and ``GET /metrics`` (Prometheus text).

``/health`` answers 503 once the engine loop has died, so a load balancer stops sending
traffic while the process exits for its supervisor to restart it."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from omniloom.serving.state import ServerState

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.omniloom
    body = {"model": state.model.name, "queue_depth": state.engine.queue_depth()}
    problem = state.engine.health()
    if problem is not None:
        return JSONResponse({"status": "failed", "reason": problem, **body}, status_code=503)
    return JSONResponse({"status": "ok", **body})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.omniloom
    state.refresh_engine_gauges()
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
