"""Structured logs: one JSON object per line, and never a byte of media.

Every API request is logged once by the HTTP middleware (method, path, status, latency, key
name) and every finished generation once by the server state (tokens by modality, cached
tokens, time to first token, and each media item as its content hash and size). Request bodies
are never logged. As a second line of defence the formatter cuts out anything that looks like a
data URL or a long base64 run, wherever it appears (messages, arguments, tracebacks).
"""

from __future__ import annotations

import json
import logging
import re
import time

_DATA_URL = re.compile(r"data:[\w.+/-]*(;[\w=.+-]+)*;base64,[A-Za-z0-9+/=_-]*")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{200,}")


def redact(text: str) -> str:
    """``text`` with data URLs and long base64 runs replaced by their length."""
    text = _DATA_URL.sub(lambda m: f"data:<{len(m.group())} chars redacted>", text)
    return _BASE64_RUN.sub(lambda m: f"<{len(m.group())} chars redacted>", text)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...fields, "exception"?}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    """The same content for a terminal: message, then ``key=value`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = "".join(f" {k}={v}" for k, v in getattr(record, "fields", {}).items())
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: "
        line += record.getMessage() + fields
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def configure(style: str = "json", level: str = "info") -> None:
    """Send omniloom's and uvicorn's logs to stderr in ``style`` (json | text). Uvicorn's own
    access log is off: the middleware writes a richer line per request."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if style == "json" else TextFormatter())
    for name in ("omniloom", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True


def event(logger: logging.Logger, message: str, **fields) -> None:
    """Log ``message`` at info level with structured ``fields``."""
    logger.info(message, extra={"fields": fields})
