"""Gateway mode (``omniloom serve --upstream URL``): another OpenAI-compatible server runs the LLM
step — here a second omniloom, serving the same model — while this one builds the prompts,
turns images into words, and accounts for the tokens."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import data_url, free_port, start_server

pytestmark = pytest.mark.slow
MODEL = "omniloom-smol"
QUESTION = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def gateway(server, tmp_path_factory):
    log = tmp_path_factory.mktemp("gateway") / "server.log"
    proxy = start_server(log, "--upstream", f"{server.url}/v1")
    yield proxy
    proxy.proc.terminate()
    proxy.proc.wait(timeout=30)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_the_answer_and_its_usage_are_the_upstreams(gateway, server):
    ask = {"model": MODEL, "messages": QUESTION, "max_tokens": 12, "temperature": 0}
    through = _client(gateway.url).chat.completions.create(**ask)
    direct = _client(server.url).chat.completions.create(**ask)
    assert through.choices[0].message.content == direct.choices[0].message.content
    assert through.usage.prompt_tokens == direct.usage.prompt_tokens
    assert through.usage.completion_tokens == direct.usage.completion_tokens == 12
    assert through.choices[0].finish_reason == "length"


def test_streaming_through_the_gateway(gateway):
    stream = _client(gateway.url).chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].usage.completion_tokens == 8


def test_an_image_reaches_the_upstream_as_words(gateway, astronaut_jpeg):
    image = {"type": "image_url", "image_url": {"url": data_url(astronaut_jpeg, "image/jpeg")}}
    content = [image, {"type": "text", "text": "What is in the picture?"}]
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert reply["perception"] == "cascade"
    assert reply["usage"]["prompt_tokens_details"]["image_tokens"] == 0
    native = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body | {"perception": "native"}, timeout=120
    )
    assert native.status_code == 400 and "gateway" in native.json()["error"]["message"]


def test_what_the_gateway_cannot_forward_is_refused_in_words(gateway):
    body = {"model": MODEL, "messages": QUESTION, "response_format": {"type": "json_object"}}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body | {"n": 2}, timeout=60)
    assert r.status_code == 400


def test_an_unreachable_upstream_is_a_503(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    proxy = start_server(tmp_path / "server.log", "--upstream", dead)
    try:
        r = httpx.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": MODEL, "messages": QUESTION, "max_tokens": 4},
            timeout=60,
        )
        assert r.status_code == 503 and "cannot be reached" in r.json()["error"]["message"]
        assert httpx.get(f"{proxy.url}/health").status_code == 200  # it keeps serving
    finally:
        proxy.proc.terminate()
        proxy.proc.wait(timeout=30)
