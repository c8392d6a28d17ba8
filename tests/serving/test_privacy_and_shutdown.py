"""A photo with GPS EXIF leaves no trace of its metadata in logs, cache keys or model input; logs
are structured and carry no media bytes; SIGTERM lets in-flight requests finish."""

from __future__ import annotations

import base64
import io
import json
import signal
import threading

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.conftest import data_url, start_server

pytestmark = pytest.mark.slow
MODEL = "omniloom-smol"
SECRETS = ("LeakCam", "SECRET-PLACE-7731", "Jane Roe")


def _photo(with_metadata: bool) -> bytes:
    pixels = np.random.default_rng(7).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    buf = io.BytesIO()
    exif = Image.Exif()
    if with_metadata:
        exif[0x010F] = SECRETS[0]  # Make
        exif[0x010E] = SECRETS[1]  # ImageDescription
        exif[0x013B] = SECRETS[2]  # Artist
        exif[0x8825] = {1: "N", 2: (52.0, 22.0, 31.0), 3: "E", 4: (4.0, 53.0, 52.0)}  # GPS
    Image.fromarray(pixels).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _ask(client: openai.OpenAI, jpeg: bytes):
    return client.chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(jpeg, "image/jpeg")}},
                    {"type": "text", "text": "What is in this picture?"},
                ],
            }
        ],
        max_tokens=8,
        temperature=0,
        extra_body={"perception": "hybrid"},  # the pixels reach the model whatever they show
    )


def test_gps_photo_leaves_no_metadata_in_logs_caches_or_model_input(server):
    tagged, clean = _photo(True), _photo(False)
    assert all(s.encode() in tagged for s in SECRETS)  # the metadata really is in the file
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    first, second = _ask(client, tagged), _ask(client, clean)
    # Same pixels, same model input: the metadata-free twin hits the tagged photo's KV blocks.
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 16
    httpx.get(f"{server.url}/health")
    text = server.log.read_text()
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    completions = [e for e in entries if e["message"] == "completion"]
    assert completions and all(e["media"] for e in completions[-2:])
    assert {e["media"][0]["sha256"] for e in completions[-2:]} == {
        completions[-1]["media"][0]["sha256"]
    }
    assert any(e["message"] == "request" and e["status"] == 200 for e in entries)
    payload = base64.b64encode(tagged).decode()
    for needle in (*SECRETS, "GPS", payload[100:160], "base64,"):
        assert needle not in text, needle


def test_sigterm_finishes_in_flight_requests_then_exits_cleanly(tmp_path):
    server = start_server(tmp_path / "server.log")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count slowly."}],
        "max_tokens": 40,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started, chunks = threading.Event(), []

    def stream() -> None:
        with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=120) as r:
            for line in filter(None, r.iter_lines()):
                if '"content"' in line:
                    started.set()
                chunks.append(line)

    reader = threading.Thread(target=stream)
    try:
        reader.start()
        assert started.wait(120)
        server.proc.send_signal(signal.SIGTERM)
        reader.join(120)
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.proc.kill()
    assert chunks[-1] == "data: [DONE]"
    assert json.loads(chunks[-2][6:])["usage"]["completion_tokens"] == 40  # served in full
