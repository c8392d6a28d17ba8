"""The log formatters: one JSON object per line, and media bytes cut out wherever they appear."""

from __future__ import annotations

import base64
import json
import logging
import os

from omniloom.serving.logs import JsonFormatter, TextFormatter, redact


def _record(message: str, *args, fields=None, exc_info=None) -> logging.LogRecord:
    record = logging.LogRecord("omniloom.test", logging.ERROR, __file__, 1, message, args, exc_info)
    if fields is not None:
        record.fields = fields
    return record


def test_data_urls_and_base64_runs_are_redacted():
    blob = base64.b64encode(os.urandom(600)).decode()
    text = redact(f"bad url data:image/png;base64,{blob} and raw {blob} end")
    assert blob[:40] not in text and "base64," not in text
    assert text.startswith("bad url data:<") and text.endswith(" end")
    assert redact("a normal sentence, sha256 9f86d081884c7d65") == (
        "a normal sentence, sha256 9f86d081884c7d65"
    )


def test_json_lines_carry_fields_and_redact_tracebacks():
    blob = base64.b64encode(os.urandom(300)).decode()
    try:
        raise ValueError(f"cannot decode data:image/jpeg;base64,{blob}")
    except ValueError as exc:
        info = (type(exc), exc, exc.__traceback__)
    line = JsonFormatter().format(_record("failed %s", "x", fields={"status": 400}, exc_info=info))
    entry = json.loads(line)
    assert (entry["message"], entry["status"], entry["level"]) == ("failed x", 400, "error")
    assert "ValueError" in entry["exception"] and blob[:40] not in line
    text = TextFormatter().format(_record("done", fields={"status": 200, "seconds": 0.5}))
    assert text.endswith("omniloom.test: done status=200 seconds=0.5")
