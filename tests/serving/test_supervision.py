"""When the engine loop dies, the request in flight gets a 503, ``/health`` answers 503,
``serve`` exits with ``EXIT_ENGINE_FAILED`` for its supervisor to restart it, and the log says
why."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from omniloom.cli import EXIT_ENGINE_FAILED
from omniloom.config import Settings
from omniloom.engine.engine import Engine, Job
from omniloom.serving.app import create_app
from omniloom.serving.state import ServerState
from tests.conftest import start_server
from tests.engine.test_scheduler import GREEDY, Outcome, text_prompt
from tests.serving.dying_engine import EngineKilled

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


def test_health_is_503_once_the_engine_loop_has_died(default_model):
    engine = Engine(default_model, start=False)
    state = ServerState(Settings(), default_model, engine)
    client = TestClient(create_app(state))
    assert client.get("/health").json()["status"] == "ok"

    def dying_step() -> None:
        raise EngineKilled("injected")

    engine.step = dying_step
    held = Outcome(1)
    engine.submit(Job(text_prompt(default_model, "Hi"), GREEDY, held))
    with pytest.raises(EngineKilled):
        engine.run_forever()  # here, on this thread: it steps once and dies
    assert held.done.is_set() and held.error.code == "engine_failed"
    health = client.get("/health")
    assert health.status_code == 503 and "EngineKilled" in health.json()["reason"]
    body = {"model": "omniloom-smol", "messages": [{"role": "user", "content": "Hi"}]}
    refused = client.post("/v1/chat/completions", json=body)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_failed"
