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
from omniloom.serving.requests import PreparedRequest, has_audio, prepare
from omniloom.serving.schemas import ChatCompletionRequest
from omniloom.serving.state import ServerState, Submitted

router = APIRouter()
log = logging.getLogger(__name__)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state: ServerState = request.app.state.omniloom
    state.check_capacity()
    cascade = await run_in_threadpool(state.cascade_for, body.perception)
    safety = await run_in_threadpool(state.image_safety)
    transcriber = await run_in_threadpool(state.transcriber) if has_audio(body) else None
    prepared = await run_in_threadpool(
        prepare,
        body,
        state.model,
        state.settings,
        cascade,
        state.engine.grammars,
        safety,
        transcriber,
    )
    submitted = state.submit(
        prepared.prompt, prepared.params, request.state.api_key, request.state.request_id
    )
    for image in prepared.image_paths:
        state.metrics.perception_images.labels(image["path"]).inc()
    for skipped in prepared.skipped:
        state.metrics.skipped_stages.labels(skipped["stage"]).inc()
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(state, prepared, include_usage, submitted),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **_headers(prepared)},
        )
    return JSONResponse(
        await _complete(state, prepared, submitted),
        headers=_headers(prepared),
    )


async def _complete(state: ServerState, prepared: PreparedRequest, submitted: Submitted) -> dict:
    n, tokenizer = prepared.params.n, state.model.tokenizer
    texts, reasons = [""] * n, ["stop"] * n
    logprobs: list[list[dict]] = [[] for _ in range(n)]
    usage = {}
    async for event in state.events(submitted):
        if isinstance(event, Delta):
            texts[event.index] += event.text
            logprobs[event.index] += responses.logprobs_content(event.logprobs, tokenizer)
        elif isinstance(event, Finished):
            reasons[event.index] = event.reason
        elif isinstance(event, Done):
            usage = responses.job_usage(prepared.prompt, event.stats)
    wants_logprobs = prepared.params.logprobs is not None
    body = responses.completion_body(
        responses.completion_id(),
        state.model.name,
        texts,
        reasons,
        usage,
        logprobs if wants_logprobs else None,
    )
    body["perception"] = prepared.perception
    if prepared.image_paths:
        body["perception_images"] = prepared.image_paths
    if (safety := prepared.media_safety()) is not None:
        body["media_safety"] = safety
    if prepared.skipped:
        body["skipped_stages"] = prepared.skipped
    return body


def _headers(prepared: PreparedRequest) -> dict[str, str]:
    """Which perception path ran; whether text in the media looked like an injection and
    whether an image was flagged by the safety classifier (where those checks ran)."""
    headers = {"X-Omniloom-Perception": prepared.perception}
    safety = prepared.media_safety() or {}
    if "prompt_injection" in safety:
        flagged = safety["prompt_injection"]
        headers["X-Omniloom-Prompt-Injection"] = "flagged" if flagged else "none"
    if "image_safety" in safety:
        flagged = safety["image_safety"]["flagged"]
        headers["X-Omniloom-Image-Safety"] = "flagged" if flagged else "none"
    if prepared.skipped:
        stages = sorted({s["stage"] for s in prepared.skipped})
        headers["X-Omniloom-Skipped"] = ",".join(stages)
    return headers


async def _stream(
    state: ServerState, prepared: PreparedRequest, include_usage: bool, submitted: Submitted
):
    cid, model, created = responses.completion_id(), state.model.name, int(time.time())
    first = [
        responses.delta_choice(i, {"role": "assistant", "content": ""})
        for i in range(prepared.params.n)
    ]
    yield responses.chunk(cid, model, created, first)
    try:
        async for event in state.events(submitted):
            if isinstance(event, Delta):
                logprobs = event.logprobs and responses.logprobs_content(
                    event.logprobs, state.model.tokenizer
                )
                choice = responses.delta_choice(
                    event.index, {"content": event.text}, None, logprobs
                )
                yield responses.chunk(cid, model, created, [choice])
            elif isinstance(event, Finished):
                choice = responses.delta_choice(event.index, {}, event.reason)
                yield responses.chunk(cid, model, created, [choice])
            elif isinstance(event, Done) and include_usage:
                yield responses.chunk(
                    cid, model, created, [], responses.job_usage(prepared.prompt, event.stats)
                )
    except OmniloomError as exc:  # e.g. the time limit: the client learns why the stream ended
        yield f"data: {json.dumps(exc.to_dict())}\n\n"
    except Exception:  # headers are sent: report in-band, as OpenAI's streams do
        request_id = getattr(submitted, "request_id", None)
        log.exception("generation failed mid-stream", extra={"fields": {"request_id": request_id}})
        error = OmniloomError("The server had an internal error while generating.")
        yield f"data: {json.dumps(error.to_dict())}\n\n"
    yield "data: [DONE]\n\n"
