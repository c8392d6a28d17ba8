"""``POST /v1/completions``: OpenAI's legacy text completion, for base models and raw prompts.

The prompt goes to the model as written (with the checkpoint's BOS), no chat template.
``echo`` puts the prompt's text before the completion; ``logprobs: k`` returns the sampled
tokens' logprobs and the k most likely at each step, in the legacy layout.
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from omniloom.engine.engine import Delta, Done, Finished
from omniloom.errors import OmniloomError
from omniloom.serving import responses
from omniloom.serving.requests import PreparedRequest, prepare_completion
from omniloom.serving.schemas import CompletionRequest
from omniloom.serving.state import ServerState, Submitted

router = APIRouter()
log = logging.getLogger(__name__)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    state: ServerState = request.app.state.omniloom
    state.check_capacity()
    prepared = await run_in_threadpool(
        prepare_completion, body, state.model, state.settings, state.engine.grammars
    )
    submitted = state.submit(
        prepared.prompt, prepared.params, request.state.api_key, request.state.request_id
    )
    echo = state.model.tokenizer.decode(prepared.prompt.token_ids) if body.echo else ""
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(state, prepared, submitted, echo, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return JSONResponse(await _complete(state, prepared, submitted, echo))


async def _complete(state, prepared: PreparedRequest, submitted: Submitted, echo: str) -> dict:
    n, tokenizer = prepared.params.n, state.model.tokenizer
    texts, reasons = [echo] * n, ["stop"] * n
    entries: list[list] = [[] for _ in range(n)]
    usage = None
    async for event in state.events(submitted):
        if isinstance(event, Delta):
            texts[event.index] += event.text
            entries[event.index] += event.logprobs
        elif isinstance(event, Finished):
            reasons[event.index] = event.reason
        elif isinstance(event, Done):
            usage = responses.job_usage(prepared.prompt, event.stats)
    wants = prepared.params.logprobs is not None
    choices = [
        responses.text_choice(
            i,
            texts[i],
            reasons[i],
            responses.legacy_logprobs(entries[i], tokenizer, 0) if wants else None,
        )
        for i in range(n)
    ]
    return responses.text_completion(
        responses.completion_id("cmpl"), state.model.name, choices, usage
    )


def _chunk(cid: str, model: str, choices: list[dict], usage: dict | None = None) -> str:
    body = responses.text_completion(cid, model, choices, usage)
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


async def _stream(state, prepared, submitted: Submitted, echo: str, include_usage: bool):
    cid, model, tokenizer = responses.completion_id("cmpl"), state.model.name, state.model.tokenizer
    offsets = [len(echo)] * prepared.params.n
    if echo:
        yield _chunk(
            cid, model, [responses.text_choice(i, echo, None, None) for i in range(len(offsets))]
        )
    try:
        async for event in state.events(submitted):
            if isinstance(event, Delta):
                logprobs = (
                    responses.legacy_logprobs(event.logprobs, tokenizer, offsets[event.index])
                    if event.logprobs
                    else None
                )
                offsets[event.index] += len(event.text)
                choice = responses.text_choice(event.index, event.text, None, logprobs)
                yield _chunk(cid, model, [choice])
            elif isinstance(event, Finished):
                yield _chunk(
                    cid, model, [responses.text_choice(event.index, "", event.reason, None)]
                )
            elif isinstance(event, Done) and include_usage:
                yield _chunk(cid, model, [], responses.job_usage(prepared.prompt, event.stats))
    except OmniloomError as exc:  # e.g. the time limit: the client learns why the stream ended
        yield f"data: {json.dumps(exc.to_dict())}\n\n"
    except Exception:  # headers are sent: report in-band
        log.exception("generation failed mid-stream")
        error = OmniloomError("The server had an internal error while generating.")
        yield f"data: {json.dumps(error.to_dict())}\n\n"
    yield "data: [DONE]\n\n"
