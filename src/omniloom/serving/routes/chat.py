"""``POST /v1/chat/completions``: one-shot JSON or an SSE stream."""

from __future__ import annotations

import json
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from omniloom.engine.engine import Delta, Done, Finished
from omniloom.errors import OmniloomError
from omniloom.serving import responses
from omniloom.serving.requests import PreparedRequest, prepare
from omniloom.serving.schemas import ChatCompletionRequest
from omniloom.serving.state import ServerState

router = APIRouter()
log = logging.getLogger(__name__)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state: ServerState = request.app.state.omniloom
    cascade = await run_in_threadpool(state.cascade_for, body.perception)
    prepared = await run_in_threadpool(
        prepare, body, state.model, state.settings, cascade, state.engine.grammars
    )
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(state, prepared, include_usage),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                "X-Omniloom-Perception": prepared.perception,
            },
        )
    return JSONResponse(
        await _complete(state, prepared), headers={"X-Omniloom-Perception": prepared.perception}
    )


async def _complete(state: ServerState, prepared: PreparedRequest) -> dict:
    n = prepared.params.n
    texts, reasons = [""] * n, ["stop"] * n
    completion_tokens = 0
    async for event in state.run_job(prepared.prompt, prepared.params):
        if isinstance(event, Delta):
            texts[event.index] += event.text
        elif isinstance(event, Finished):
            reasons[event.index] = event.reason
        elif isinstance(event, Done):
            completion_tokens = event.stats.completion_tokens
    usage = responses.usage(prepared.prompt, completion_tokens)
    body = responses.completion_body(
        responses.completion_id(), state.model.name, texts, reasons, usage
    )
    body["perception"] = prepared.perception
    return body


async def _stream(state: ServerState, prepared: PreparedRequest, include_usage: bool):
    cid, model, created = responses.completion_id(), state.model.name, int(time.time())
    first = [
        responses.delta_choice(i, {"role": "assistant", "content": ""})
        for i in range(prepared.params.n)
    ]
    yield responses.chunk(cid, model, created, first)
    try:
        async for event in state.run_job(prepared.prompt, prepared.params):
            if isinstance(event, Delta):
                choice = responses.delta_choice(event.index, {"content": event.text})
                yield responses.chunk(cid, model, created, [choice])
            elif isinstance(event, Finished):
                choice = responses.delta_choice(event.index, {}, event.reason)
                yield responses.chunk(cid, model, created, [choice])
            elif isinstance(event, Done) and include_usage:
                usage = responses.usage(prepared.prompt, event.stats.completion_tokens)
                yield responses.chunk(cid, model, created, [], usage)
    except Exception:  # headers are sent: report in-band, as OpenAI's streams do
        log.exception("generation failed mid-stream")
        error = OmniloomError("The server had an internal error while generating.")
        yield f"data: {json.dumps(error.to_dict())}\n\n"
    yield "data: [DONE]\n\n"
