"""A failure after the SSE headers are sent is reported in-band, then the stream ends cleanly."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from omniloom.engine.engine import Delta
from omniloom.engine.sampling import SamplingParams
from omniloom.processing.prompt import Prompt
from omniloom.serving.requests import PreparedRequest
from omniloom.serving.routes.chat import _stream


class FailingState:
    model = SimpleNamespace(name="m")

    async def events(self, submitted):
        yield Delta(0, "partial")
        raise RuntimeError("encoder crashed")


def test_mid_stream_failure_becomes_error_event():
    prepared = PreparedRequest(Prompt(token_ids=[1, 2]), SamplingParams())

    async def collect():
        return [
            chunk
            async for chunk in _stream(FailingState(), prepared, include_usage=True, submitted=None)
        ]

    chunks = asyncio.run(collect())
    assert chunks[-1] == "data: [DONE]\n\n"
    error = json.loads(chunks[-2].removeprefix("data: "))
    assert error["error"]["type"] == "server_error"
    assert "crashed" not in chunks[-2]  # no internals leak to the client
    assert "partial" in chunks[1]
