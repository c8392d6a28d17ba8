"""The FastAPI application: routes, OpenAI-shaped error handlers, size limit and metrics.

Every failure a client can cause becomes ``{"error": {...}}`` with a 4xx status; anything else
is a complete 500 in the same shape, on a connection that stays open, with a generic message
that gives the request id; its traceback goes to the log under that id, and it is counted in
``omniloom_requests_total`` like every other status.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from omniloom.errors import InvalidRequest, OmniloomError, PayloadTooLarge, json_path
from omniloom.serving import logs
from omniloom.serving.routes import (
    audio,
    chat,
    completions,
    health,
    models,
    playground,
    realtime,
    tokenize,
)
from omniloom.serving.state import ServerState

log = logging.getLogger(__name__)


def _error(exc: OmniloomError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=exc.headers())


_UNION_BRANCH = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|function-.*)$")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The deepest error: where a field takes one of several shapes (content: a string or a
    list of parts), the one that reached furthest into the value is the one that says why."""
    errors = exc.errors()
    first = max(errors, key=lambda e: len(e.get("loc", ()))) if errors else {}
    loc = tuple(
        p
        for p in first.get("loc", ())
        if p != "body" and not (isinstance(p, str) and _UNION_BRANCH.match(p))
    )
    param = json_path(loc) if loc else None
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    reason = first.get("msg", "invalid value").removeprefix("Value error, ")
    return f"Invalid request: {param or 'body'}: {reason}.", param


_UNPARSABLE = (
    "The request body could not be parsed: it is not valid JSON, nests too deeply, or holds a "
    "number with more than 4300 digits."
)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OmniloomError)
    async def _omniloom(_: Request, exc: OmniloomError):
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return _error(InvalidRequest(message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        if exc.status_code == 413:
            return _error(PayloadTooLarge(str(exc.detail)))
        if exc.status_code == 400:  # FastAPI could not parse the body
            return _error(InvalidRequest(_UNPARSABLE))
        err = OmniloomError(str(exc.detail), code=str(exc.status_code))
        err.status, err.type = exc.status_code, "invalid_request_error"
        return _error(err)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        log.exception("unhandled error", exc_info=exc)
        return _error(OmniloomError("The server had an internal error processing the request."))


class BodySizeLimit:
    """Refuse a body over the limit: at once when ``Content-Length`` declares it, else by
    counting bytes as they arrive (a chunked upload), before it is buffered whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            too_large = PayloadTooLarge(f"The request body exceeds {self.limit} bytes.")
            return await _error(too_large)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise StarletteHTTPException(413, f"The request body exceeds {self.limit} bytes.")
            return message

        await self.app(scope, limited_receive, send)


def install_middleware(app: FastAPI, state: ServerState) -> None:
    app.add_middleware(BodySizeLimit, limit=state.settings.limits.max_request_bytes)

    @app.middleware("http")
    async def _auth_metrics_and_log(request: Request, call_next):
        start = time.perf_counter()
        request.state.request_id = uuid.uuid4().hex[:16]
        try:
            _authorize(request, state)
            response = await call_next(request)
        except OmniloomError as exc:
            response = _error(exc)
        except Exception as exc:  # answered here, so the connection is not dropped
            response = _internal_error(request, exc)
        elapsed = time.perf_counter() - start
        endpoint = getattr(request.scope.get("route"), "path", "unmatched")
        state.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        state.metrics.request_seconds.labels(endpoint).observe(elapsed)
        response.headers["X-Request-Id"] = request.state.request_id
        _log_request(request, response.status_code, elapsed)
        return response


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = request.state.request_id
    fields = {"request_id": request_id, "path": request.url.path}
    log.error("unhandled error", exc_info=exc, extra={"fields": fields})
    return _error(
        OmniloomError(
            f"The server had an internal error processing the request (request id {request_id}).",
            code="internal_error",
        )
    )


def _log_request(request: Request, status: int, elapsed: float) -> None:
    """One line per request: what was asked and how it ended, never the body."""
    key = getattr(request.state, "api_key", None)
    logs.event(
        log,
        "request",
        request_id=request.state.request_id,
        method=request.method,
        path=request.url.path,
        status=status,
        seconds=round(elapsed, 4),
        key=key.name if key else None,
        client=request.client.host if request.client else None,
    )


def _authorize(request: Request, state: ServerState) -> None:
    """API routes need a known key within its limits (when keys are configured)."""
    request.state.api_key = None
    if state.keys is None or not request.url.path.startswith("/v1/"):
        return
    record = state.keys.authenticate(request.headers.get("authorization"))
    state.keys.admit(record)
    request.state.api_key = record


def _routes() -> FastAPI:
    app = FastAPI(title="omniloom", version="0.1.0")
    for module in (chat, completions, audio, realtime, tokenize, models, health, playground):
        app.include_router(module.router)
    app.mount("/playground", playground.assets(), name="playground")
    return app


def openapi_schema() -> dict:
    """The API's OpenAPI document, without loading a model (clients, schema fuzzing)."""
    return _routes().openapi()


def create_app(state: ServerState) -> FastAPI:
    app = _routes()
    app.state.omniloom = state
    install_error_handlers(app)
    install_middleware(app, state)
    return app
