"""A hostile client against the real server: values beyond every field's range, broken Unicode,
degenerate images, forced internal errors, idle connections and oversized schemas. Nothing may
give a 5xx (except the forced one, which must be complete, logged and counted), and the server
must be healthy after every request."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import socket
import time

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from websockets.sync.client import connect

from omniloom.config import Limits, Settings
from omniloom.engine.engine import Engine
from omniloom.runtime import BackgroundServer
from omniloom.serving.state import ServerState
from tests.conftest import data_url

pytestmark = pytest.mark.slow
MODEL = "omniloom-smol"
HYPOTHESIS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def served(default_model):
    """The real server on loopback with the default perception (``auto``: OCR and labels),
    short answers, short connection timeouts and no fetching."""
    limits = Limits(
        max_completion_tokens=64,
        fetch_allow_domains="hostile.invalid",
        header_timeout_s=1.0,
        keep_alive_timeout_s=1,
    )
    config = dataclasses.replace(Settings(), limits=limits)
    state = ServerState(config, default_model, Engine(default_model, config.engine))
    state.cascade_for(None)
    with BackgroundServer(state) as server:
        yield server
    state.engine.shutdown()


@pytest.fixture(scope="module")
def http(served):
    with httpx.Client(base_url=served.url, timeout=60) as client:
        yield client


def chat_body(**fields) -> dict:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 2,
        **fields,
    }


def post_raw(http: httpx.Client, path: str, body) -> httpx.Response:
    """Python's JSON writer: NaN and Infinity as bare words, lone surrogates as escapes."""
    return http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def assert_answered_and_healthy(http: httpx.Client, response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"] == "invalid_request_error", error
    assert http.get("/health").json()["status"] == "ok"


FIELDS = (
    "seed",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "top_k",
    "top_logprobs",
    "temperature",
    "top_p",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "logprobs",
    "response_format",
    "perception",
    "messages",
    "model",
    "stream",
)
HUGE_INTS = st.sampled_from([2**63, 2**64 - 1, 2**64, 2**70, -(2**63) - 1, -1, 0, 2**31])
ODD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 3.0])
BROKEN_TEXT = st.sampled_from(["\ud800", "a\udfffb", "\x00", "", "\u202e", "x" * 10_000])
NESTED = st.recursive(
    st.none() | st.booleans() | HUGE_INTS | ODD_FLOATS | BROKEN_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(BROKEN_TEXT, inner, max_size=3),
    max_leaves=8,
)
HOSTILE_VALUES = HUGE_INTS | ODD_FLOATS | BROKEN_TEXT | NESTED


@HYPOTHESIS
@given(field=st.sampled_from(FIELDS), value=HOSTILE_VALUES, stream=st.booleans())
def test_hostile_field_values_never_fail_the_server(http, field, value, stream):
    body = chat_body(**{"stream": stream, field: value})
    assert_answered_and_healthy(http, post_raw(http, "/v1/chat/completions", body))


@HYPOTHESIS
@given(text=BROKEN_TEXT, where=st.sampled_from(["system", "user", "part", "stop", "tokenize"]))
def test_invalid_unicode_anywhere_is_a_400_that_names_the_field(http, text, where):
    if where == "stop":
        body = chat_body(stop=[text])
    elif where == "part":
        body = chat_body(messages=[{"role": "user", "content": [{"type": "text", "text": text}]}])
    else:
        role = "system" if where == "system" else "user"
        body = chat_body(messages=[{"role": role, "content": text}, *chat_body()["messages"]])
    path = "/tokenize" if where == "tokenize" else "/v1/chat/completions"
    response = post_raw(http, path, body)
    assert_answered_and_healthy(http, response)
    if "\ud800" in text or "\udfff" in text:
        assert response.status_code == 400
        assert "not valid Unicode" in response.json()["error"]["message"]
        assert response.json()["error"]["param"].startswith(("messages[", "stop"))


def _degenerate_image(width: int, height: int, mode: str = "RGB") -> bytes:
    """A PNG of a diagonal colour pattern in ``mode`` (``P``: a full 256-colour palette)."""
    y, x = np.indices((height, width))
    rgb = np.stack([(x * 7) % 256, (y * 5) % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgb)
    if mode == "P":
        image = image.quantize(256)
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    elif mode != "RGB":
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


SHORT = st.sampled_from([1, 2, 3, 7, 10, 31])
LONG = st.sampled_from([1, 64, 4999, 5000])


@settings(HYPOTHESIS, max_examples=25)
@given(
    short=SHORT,
    long=LONG,
    tall=st.booleans(),
    mode=st.sampled_from(["RGB", "L", "P", "RGBA", "LA", "I;16", "1"]),
    detail=st.sampled_from(["low", "high", "auto"]),
    perception=st.sampled_from(["auto", "native", "cascade", "hybrid"]),
)
def test_degenerate_images_are_answered(http, short, long, tall, mode, detail, perception):
    width, height = (short, long) if tall else (long, short)
    url = data_url(_degenerate_image(width, height, mode))
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url, "detail": detail}},
    ]
    body = chat_body(messages=[{"role": "user", "content": content}], perception=perception)
    for path in ("/v1/chat/completions", "/tokenize"):
        response = post_raw(http, path, body)
        assert_answered_and_healthy(http, response)


def test_thin_strip_reaches_ocr(http):
    url = data_url(_degenerate_image(1, 5000))
    content = [{"type": "image_url", "image_url": {"url": url}}]
    response = post_raw(http, "/v1/chat/completions", chat_body(messages=[
        {"role": "user", "content": content}
    ]))  # fmt: skip
    assert response.status_code == 200, response.text
    assert "skipped_stages" not in response.json()


def test_failing_ocr_is_skipped_reported_and_counted(http, served, monkeypatch):
    cascade = served.state.cascade_for(None)

    def broken(image):
        raise RuntimeError("OCR model crashed")

    monkeypatch.setattr(cascade.ocr, "read", broken)
    url = data_url(_degenerate_image(64, 48))
    content = [
        {"type": "text", "text": "What does it say?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    response = post_raw(http, "/v1/chat/completions", chat_body(messages=[
        {"role": "user", "content": content}
    ]))  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["skipped_stages"] == [{"part": "messages[0].content[1]", "stage": "ocr"}]
    assert response.headers["X-Omniloom-Skipped"] == "ocr"
    assert 'omniloom_skipped_stages_total{stage="ocr"} 1.0' in http.get("/metrics").text


def test_forced_500_is_complete_logged_counted_and_keeps_the_connection(
    served, monkeypatch, caplog
):
    def broken(_requested):
        raise RuntimeError("forced internal failure")

    monkeypatch.setattr(served.state, "cascade_for", broken)
    body = json.dumps(chat_body()).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    host, port = served.url.removeprefix("http://").split(":")
    with (
        caplog.at_level(logging.ERROR, logger="omniloom"),
        socket.create_connection((host, int(port)), timeout=30) as conn,
    ):
        conn.sendall(request)
        status, headers, payload = _read_response(conn)
        conn.sendall(health)  # the same connection
        after = _read_response(conn)
    assert status == 500 and headers.get("connection") != "close"
    error = json.loads(payload)["error"]
    request_id = headers["x-request-id"]
    assert error["type"] == "server_error" and request_id in error["message"]
    assert "forced" not in error["message"]
    assert after[0] == 200 and json.loads(after[2])["status"] == "ok"
    logged = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == request_id]
    assert any(r.exc_info and "forced internal failure" in str(r.exc_info[1]) for r in logged)
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'omniloom_requests_total{endpoint="/v1/chat/completions",status="500"} 1.0' in metrics


def _read_response(conn: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        body += conn.recv(65536)
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("send", [b"", b"GET /health HTTP/1.1\r\nHo"])
def test_idle_and_half_sent_connections_are_closed(served, send):
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(send)
        start = time.monotonic()
        assert conn.recv(1024) == b""  # closed by the server, not by our timeout
        assert time.monotonic() - start < 8


def test_a_websocket_outlives_the_idle_connection_timeout(served):
    """The idle timer of a connection ends when it becomes a WebSocket (/v1/realtime)."""
    url = served.url.replace("http", "ws") + "/v1/realtime"
    with connect(url, max_size=None, max_queue=None) as ws:
        assert json.loads(ws.recv(timeout=60))["type"] == "session.created"
        time.sleep(2.0)  # twice this server's header timeout
        ws.send(json.dumps({"type": "session.update", "session": {}}))
        assert json.loads(ws.recv(timeout=10))["type"] == "session.updated"


def test_schema_over_the_bounds_is_refused_before_compiling(http):
    properties = {f"p{i}": {"type": "string"} for i in range(2000)}
    schema = {"type": "object", "properties": properties}
    fmt = {"type": "json_schema", "json_schema": {"name": "big", "schema": schema}}
    response = post_raw(http, "/v1/chat/completions", chat_body(response_format=fmt))
    assert response.status_code == 400
    assert "more than 2000 values" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("schema", "where", "says"),
    [
        ({"type": "object", "properties": {"a": {"type": "foo"}}}, "properties.a.type", "foo"),
        ({"properties": {"a": {"$ref": "#/$defs/x"}}}, "properties.a", "points to nothing"),
        ({"type": "string", "pattern": "(("}, "schema", "regular expression"),
        ({"type": "integer", "minimum": 5, "maximum": 1}, "schema", "greater than"),
        ({"type": "string", "maxLength": 10**9}, "maxLength", "between 0 and"),
    ],
)
def test_schema_errors_are_plain_and_name_the_place(http, schema, where, says):
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    response = post_raw(http, "/v1/chat/completions", chat_body(response_format=fmt))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert where in message and says in message and ".cc:" not in message


def test_data_inside_a_schema_is_not_checked_as_a_schema(http):
    schema = {
        "type": "object",
        "properties": {"pet": {"type": "object", "const": {"type": "banana", "maximum": -1}}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    response = post_raw(http, "/v1/chat/completions", chat_body(response_format=fmt))
    assert "banana" not in response.text and response.status_code < 500


def test_huge_text_is_refused_from_its_size(http):
    body = chat_body(messages=[{"role": "user", "content": "word " * 1_000_000}])
    response = post_raw(http, "/v1/chat/completions", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and "bytes of text" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat_body(messages=[{"role": "user", "content": None}]), "messages[0]"),
        (chat_body(seed=2**70), "seed"),
        (chat_body(temperature=math.nan), "temperature"),
        (chat_body(stop=["x" * 1000]), "stop"),
    ],
)
def test_out_of_range_requests_name_the_field(http, body, param):
    response = post_raw(http, "/v1/chat/completions", body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_data_url_that_is_not_an_image_type_is_refused(http):
    url = data_url(_degenerate_image(8, 8), mime="application/pdf")
    content = [{"type": "image_url", "image_url": {"url": url}}]
    body = chat_body(messages=[{"role": "user", "content": content}])
    response = post_raw(http, "/v1/chat/completions", body)
    assert response.status_code == 400 and "application/pdf" in response.text


def test_tokens_of_a_cancelled_stream_are_counted(http, served):
    def completion_tokens() -> float:
        for line in http.get("/metrics").text.splitlines():
            if line.startswith("omniloom_completion_tokens_total "):
                return float(line.split()[1])
        return 0.0

    before = completion_tokens()
    body = chat_body(max_tokens=64, ignore_eos=True, stream=True)
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if _has_text(line):
                break  # the first generated text: hang up
    deadline = time.monotonic() + 30
    while completion_tokens() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 0 < completion_tokens() - before < 64


def _has_text(line: str) -> bool:
    return line.startswith("data: {") and bool(
        json.loads(line.removeprefix("data: "))["choices"][0]["delta"].get("content")
    )
