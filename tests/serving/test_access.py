"""API keys (hashed at rest, per-key rate limits) and the bounded queue, on a real server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import httpx
import openai
import pytest

from omniloom.config import EngineSettings, Limits, Settings
from omniloom.engine.engine import Engine
from omniloom.runtime import BackgroundServer
from omniloom.serving.auth import KeyStore, add_key
from omniloom.serving.state import ServerState

MODEL = "omniloom-smol"
HELLO = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def _server(model, settings: Settings) -> BackgroundServer:
    engine = Engine(model, settings.engine)
    state = ServerState(settings, model, engine, keys=KeyStore.from_file(settings.api_keys_file))
    return BackgroundServer(state)


def test_keys_are_hashed_checked_and_rate_limited(default_model, tmp_path):
    path = tmp_path / "keys.json"
    key = add_key(path, "alice", rpm=2, tpm=100_000)
    assert key not in path.read_text()  # only the hash is stored
    settings = Settings(api_keys_file=str(path))
    with _server(default_model, settings) as server:
        url = f"{server.url}/v1/chat/completions"
        missing = httpx.post(url, json=HELLO)
        wrong = httpx.post(url, json=HELLO, headers={"Authorization": "Bearer sk-omni-nope"})
        assert (missing.status_code, wrong.status_code) == (401, 401)
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        for _ in range(2):
            assert client.chat.completions.create(**HELLO).choices[0].message.content
        limited = httpx.post(url, json=HELLO, headers={"Authorization": f"Bearer {key}"})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "alice" in limited.json()["error"]["message"]
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(**HELLO)
        assert httpx.get(f"{server.url}/health").status_code == 200  # health needs no key


def test_full_queue_answers_429_with_retry_after_and_loses_nothing(default_model):
    settings = dataclasses.replace(
        Settings(),
        limits=Limits(max_queued_requests=2),
        engine=EngineSettings(max_batch=1),
    )
    body = {**HELLO, "max_tokens": 40, "ignore_eos": True}

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            calls = [client.post(f"{url}/v1/chat/completions", json=body) for _ in range(10)]
            return await asyncio.gather(*calls)

    with _server(default_model, settings) as server:
        replies = asyncio.run(burst(server.url))
        codes = sorted(r.status_code for r in replies)
        assert set(codes) == {200, 429}, codes
        for r in replies:
            if r.status_code == 429:
                assert r.headers["Retry-After"] and r.json()["error"]["code"] == "queue_full"
            else:
                assert r.json()["usage"]["completion_tokens"] == 40  # served in full
        assert httpx.post(f"{server.url}/v1/chat/completions", json=HELLO).status_code == 200


def _wait_idle(engine: Engine, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while engine.running() or engine.queue_depth():
        assert time.monotonic() < deadline, "the stopped job still holds the engine"
        time.sleep(0.05)


def test_generation_past_the_time_limit_is_stopped_with_504(default_model):
    settings = dataclasses.replace(Settings(), limits=Limits(request_timeout_s=3.0))
    endless = {**HELLO, "max_tokens": 1000, "ignore_eos": True}
    with _server(default_model, settings) as server:
        url = f"{server.url}/v1/chat/completions"
        reply = httpx.post(url, json=endless, timeout=60)
        assert reply.status_code == 504 and reply.headers["x-should-retry"] == "false"
        assert reply.json()["error"]["code"] == "request_timeout"
        assert "3 s" in reply.json()["error"]["message"]
        with httpx.stream("POST", url, json={**endless, "stream": True}, timeout=60) as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][6:])["error"]["code"] == "request_timeout"
        assert any('"content"' in line for line in lines[1:-2])  # it had been generating
        _wait_idle(server.state.engine)  # the KV blocks went back
        assert httpx.post(url, json=HELLO, timeout=60).status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'omniloom_request_timeouts_total{phase="running"} 2.0' in metrics


def test_request_that_cannot_start_in_time_gets_503_with_retry_after(default_model):
    settings = dataclasses.replace(Settings(), limits=Limits(request_timeout_s=0.001))
    with _server(default_model, settings) as server:
        reply = httpx.post(f"{server.url}/v1/chat/completions", json=HELLO, timeout=60)
        assert reply.status_code == 503 and int(reply.headers["Retry-After"]) >= 1
        assert reply.json()["error"]["code"] == "queue_timeout"
        _wait_idle(server.state.engine)
        assert httpx.get(f"{server.url}/health").status_code == 200


def test_bodies_over_the_limit_get_413_declared_or_chunked(default_model):
    settings = dataclasses.replace(Settings(), limits=Limits(max_request_bytes=64 * 1024))
    prefix = b'{"model": "omniloom-smol", "messages": [{"role": "user", "content": "'

    def body():  # no Content-Length: httpx sends it chunked
        yield prefix
        for _ in range(64):
            yield b"x" * 4096
        yield b'"}]}'

    with _server(default_model, settings) as server:
        url = f"{server.url}/v1/chat/completions"
        reply = httpx.post(url, content=body(), headers={"Content-Type": "application/json"})
        assert "content-length" not in reply.request.headers
        assert reply.status_code == 413
        assert reply.json()["error"]["code"] == "payload_too_large"
        assert "65536 bytes" in reply.json()["error"]["message"]
        declared = httpx.post(
            url, content=b"x" * 70_000, headers={"Content-Type": "application/json"}
        )
        assert declared.request.headers["content-length"] == "70000"
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "payload_too_large"
        assert httpx.post(url, json=HELLO, timeout=60).status_code == 200


def test_realtime_needs_a_key_in_the_header_or_the_subprotocol(default_model, tmp_path):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    path = tmp_path / "keys.json"
    key = add_key(path, "bob", rpm=100, tpm=100_000)
    with _server(default_model, Settings(api_keys_file=str(path))) as server:
        url = server.url.replace("http", "ws") + "/v1/realtime"
        with pytest.raises(InvalidStatus):  # refused before the upgrade completes
            connect(url, open_timeout=30)
        with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
            assert json.loads(ws.recv(timeout=60))["type"] == "session.created"
        protocols = ["realtime", f"openai-insecure-api-key.{key}"]
        with connect(url, subprotocols=protocols) as ws:
            assert ws.subprotocol == "realtime"
            assert json.loads(ws.recv(timeout=60))["type"] == "session.created"
