"""When the engine loop dies, the request in flight gets a 503, ``serve`` exits with
``EXIT_ENGINE_FAILED`` for its supervisor to restart it, and the log says why."""

from __future__ import annotations

import httpx
import pytest

from omniloom.cli import EXIT_ENGINE_FAILED
from tests.conftest import start_server

pytestmark = pytest.mark.slow


def test_serve_exits_non_zero_when_the_engine_loop_dies(tmp_path):
    server = start_server(tmp_path / "server.log", launcher="tests.serving.dying_engine")
    try:
        body = {"model": "omniloom-smol", "messages": [{"role": "user", "content": "Hi"}]}
        response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "engine_failed"
        assert server.proc.wait(timeout=60) == EXIT_ENGINE_FAILED
    finally:
        server.proc.kill()
    log = server.log.read_text()
    assert "the engine loop died" in log and "EngineKilled" in log
