"""The default weight format and the converted-weights cache, through ``omniloom serve``: with no
``--dtype`` the server stores int8 weights where the CPU kernels run vectorized, converts the
GGUF file once, and a restart maps the cached conversion instead."""

from __future__ import annotations

import httpx
import openai
import pytest

from omniloom import kernels
from tests.conftest import data_url, start_server

pytestmark = pytest.mark.slow


def _serve_default(log, cache_dir):
    return start_server(log, env={"OMNILOOM_DTYPE": "auto", "OMNILOOM_CACHE_DIR": str(cache_dir)})


def _stop(server) -> None:
    server.proc.terminate()
    server.proc.wait(timeout=30)


def test_default_format_converts_once_and_answers(tmp_path, astronaut_jpeg):
    expected = "int8" if kernels.vectorized() else "float32"
    first = _serve_default(tmp_path / "first.log", tmp_path / "cache")
    try:
        card = httpx.get(f"{first.url}/v1/models/omniloom-smol").json()
        assert card["weight_format"] == expected
    finally:
        _stop(first)
    assert "converted weights cached" in first.log.read_text()
    assert len(list((tmp_path / "cache" / "weights").glob(f"*-{expected}-*.pt"))) == 1

    second = _serve_default(tmp_path / "second.log", tmp_path / "cache")
    try:
        client = openai.OpenAI(base_url=f"{second.url}/v1", api_key="unused", max_retries=0)
        image = {"url": data_url(astronaut_jpeg, "image/jpeg"), "detail": "low"}
        content = [
            {"type": "text", "text": "Describe it."},
            {"type": "image_url", "image_url": image},
        ]
        reply = client.chat.completions.create(
            model="omniloom-smol",
            messages=[{"role": "user", "content": content}],
            max_tokens=8,
            temperature=0,
        )
        assert reply.choices[0].message.content.strip()
        assert reply.usage.completion_tokens > 0
    finally:
        _stop(second)
    assert "converted weights cached" not in second.log.read_text()
