"""Errors that reach the client, shaped like OpenAI's ``{"error": {...}}`` objects.

Any layer may raise these; the serving layer turns them into responses with the given status.
The message always says what was wrong with the request, never a stack trace.
"""

from __future__ import annotations


def json_path(path: tuple) -> str:
    """``messages[0].content[1].text`` for ``("messages", 0, "content", 1, "text")``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "body"


class OmniloomError(Exception):
    """Base error: an HTTP status plus OpenAI's type/param/code fields."""

    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def headers(self) -> dict[str, str]:
        """Response headers that go with this error (``Retry-After`` where a retry may help)."""
        retry_after = getattr(self, "retry_after", None)
        return {"Retry-After": str(retry_after)} if retry_after else {}

    def to_dict(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(OmniloomError):
    """The request is malformed or asks for something unsupported (400)."""

    status = 400
    type = "invalid_request_error"


class MediaError(InvalidRequest):
    """Media that cannot be fetched, decoded or accepted (400)."""


class ContextLengthExceeded(InvalidRequest):
    """The prompt plus the requested completion does not fit the model's context (400)."""

    def __init__(self, message: str, *, param: str | None = "messages"):
        super().__init__(message, param=param, code="context_length_exceeded")


class ModelNotFound(OmniloomError):
    """The requested model is not served here (404)."""

    status = 404
    type = "invalid_request_error"

    def __init__(self, model: str, available: list[str]):
        names = ", ".join(available)
        super().__init__(
            f"The model '{model}' does not exist. Available models: {names}.",
            param="model",
            code="model_not_found",
        )


class PayloadTooLarge(OmniloomError):
    """The request body is larger than the configured limit (413)."""

    status = 413
    type = "invalid_request_error"

    def __init__(self, message: str):
        super().__init__(message, code="payload_too_large")


class AuthenticationFailed(OmniloomError):
    """No API key, or one this server does not know (401)."""

    status = 401
    type = "invalid_request_error"

    def __init__(self, message: str):
        super().__init__(message, code="invalid_api_key")


class RateLimited(OmniloomError):
    """Too many requests or tokens for this key, or the queue is full (429, ``Retry-After``)."""

    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, retry_after: float, code: str = "rate_limit_exceeded"):
        super().__init__(message, code=code)
        self.retry_after = max(1, round(retry_after))


class ServiceUnavailable(OmniloomError):
    """The server is shutting down, or too busy to start this request in time (503,
    ``Retry-After``)."""

    status = 503
    type = "server_error"

    def __init__(self, message: str, retry_after: float = 5, code: str = "service_unavailable"):
        super().__init__(message, code=code)
        self.retry_after = max(1, round(retry_after))


class RequestTimedOut(OmniloomError):
    """A generation ran past the server's per-request time limit and was stopped (504).

    ``x-should-retry: false`` tells the official clients not to resend it: the same request
    would run into the same limit."""

    status = 504
    type = "timeout"

    def __init__(self, message: str):
        super().__init__(message, code="request_timeout")

    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}
