"""``POST /v1/chat/completions``: one-shot JSON or an SSE stream."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from omniloom.engine.engine import Delta, Done, Finished
from omniloom.errors import OmniloomError
from omniloom.serving import responses
from omniloom.serving.requests import PreparedRequest, hears_audio, prepare
from omniloom.serving.schemas import ChatCompletionRequest
from omniloom.serving.spoken import SpokenStream, Voice, spoken_message, with_audio_usage
from omniloom.serving.state import ServerState, Submitted
from omniloom.speech.tts import Synthesizer

router = APIRouter()
log = logging.getLogger(__name__)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state: ServerState = request.app.state.omniloom
    state.check_capacity()
    cascade = await run_in_threadpool(state.cascade_for, body.perception)
    safety = await run_in_threadpool(state.image_safety)
    transcriber = (
        await run_in_threadpool(state.transcriber)
        if hears_audio(body, state.model, state.settings)
        else None
    )
    synthesizer = await run_in_threadpool(state.synthesizer) if body.wants_audio else None
    voice = Voice.from_request(body, synthesizer)
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
    spoken = Spoken(voice, synthesizer) if voice else None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream(state, prepared, include_usage, submitted, spoken),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **_headers(prepared)},
        )
    return JSONResponse(
        await _complete(state, prepared, submitted, spoken),
        headers=_headers(prepared),
    )


@dataclass(frozen=True)
class Spoken:
    """How the answer is to be spoken, and by what."""

    voice: Voice
    synthesizer: Synthesizer


async def _complete(
    state: ServerState, prepared: PreparedRequest, submitted: Submitted, spoken: Spoken | None
) -> dict:
    n, tokenizer = prepared.params.n, state.model.tokenizer
    texts, reasons = [""] * n, ["stop"] * n
    logprobs: list[list[dict]] = [[] for _ in range(n)]
    usage, timings = {}, {}
    async for event in state.events(submitted):
        if isinstance(event, Delta):
            texts[event.index] += event.text
            logprobs[event.index] += responses.logprobs_content(event.logprobs, tokenizer)
        elif isinstance(event, Finished):
            reasons[event.index] = event.reason
        elif isinstance(event, Done):
            usage = responses.job_usage(prepared.prompt, event.stats)
            timings = responses.stage_timings(prepared.timings, event.stats)
    wants_logprobs = prepared.params.logprobs is not None
    body = responses.completion_body(
        responses.completion_id(),
        state.model.name,
        texts,
        reasons,
        usage,
        logprobs if wants_logprobs else None,
    )
    if spoken is not None:
        await _speak_answers(body, spoken)
    body["perception"] = prepared.perception
    body["timings"] = timings
    if prepared.image_paths:
        body["perception_images"] = prepared.image_paths
    if prepared.audio_path:
        body["audio_perception"] = prepared.audio_path
    if (safety := prepared.media_safety()) is not None:
        body["media_safety"] = safety
    if prepared.skipped:
        body["skipped_stages"] = prepared.skipped
    return body


async def _speak_answers(body: dict, spoken: Spoken) -> None:
    """Each choice's text moves into ``message.audio`` with its speech (OpenAI's shape)."""
    tokens = 0
    for choice in body["choices"]:
        message = choice["message"]
        audio, count = await run_in_threadpool(
            spoken_message, spoken.synthesizer, message["content"], spoken.voice
        )
        message["content"], message["audio"], tokens = None, audio, tokens + count
    body["usage"] = with_audio_usage(body["usage"], tokens)


def _headers(prepared: PreparedRequest) -> dict[str, str]:
    """Which perception path ran; whether text in the media looked like an injection and
    whether an image was flagged by the safety classifier (where those checks ran)."""
    headers = {"X-Omniloom-Perception": prepared.perception}
    if prepared.audio_path:
        headers["X-Omniloom-Audio-Perception"] = prepared.audio_path
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
    state: ServerState,
    prepared: PreparedRequest,
    include_usage: bool,
    submitted: Submitted,
    spoken: Spoken | None = None,
):
    cid, model, created = responses.completion_id(), state.model.name, int(time.time())
    n = prepared.params.n
    first = [responses.delta_choice(i, {"role": "assistant", "content": ""}) for i in range(n)]
    yield responses.chunk(cid, model, created, first)
    speech = SpokenStream(spoken.synthesizer, n) if spoken else None
    try:
        async for event in state.events(submitted):
            for choices, usage in await _stream_event(state, prepared, event, speech):
                if choices or include_usage:
                    timings = (
                        responses.stage_timings(prepared.timings, event.stats) if usage else None
                    )
                    yield responses.chunk(cid, model, created, choices, usage, timings)
    except OmniloomError as exc:  # e.g. the time limit: the client learns why the stream ended
        yield f"data: {json.dumps(exc.to_dict())}\n\n"
    except Exception:  # headers are sent: report in-band, as OpenAI's streams do
        request_id = getattr(submitted, "request_id", None)
        log.exception("generation failed mid-stream", extra={"fields": {"request_id": request_id}})
        error = OmniloomError("The server had an internal error while generating.")
        yield f"data: {json.dumps(error.to_dict())}\n\n"
    yield "data: [DONE]\n\n"


async def _stream_event(state, prepared, event, speech: SpokenStream | None) -> list:
    """(choices, usage) for the chunks one engine event becomes."""
    if isinstance(event, Delta):
        if speech is not None:
            return [
                ([responses.delta_choice(event.index, d)], None)
                for d in await speech.text(event.index, event.text)
            ]
        logprobs = event.logprobs and responses.logprobs_content(
            event.logprobs, state.model.tokenizer
        )
        return [
            ([responses.delta_choice(event.index, {"content": event.text}, None, logprobs)], None)
        ]
    if isinstance(event, Finished):
        spoken = await speech.finish(event.index) if speech is not None else []
        pieces = [([responses.delta_choice(event.index, d)], None) for d in spoken]
        return [*pieces, ([responses.delta_choice(event.index, {}, event.reason)], None)]
    if isinstance(event, Done):
        usage = responses.job_usage(prepared.prompt, event.stats)
        if speech is not None:
            usage = with_audio_usage(usage, speech.audio_tokens)
        return [([], usage)]
    return []
