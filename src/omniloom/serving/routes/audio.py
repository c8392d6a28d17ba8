"""``POST /v1/audio/transcriptions``, ``/v1/audio/translations`` and ``/v1/audio/speech``.

Transcription takes OpenAI's multipart form; the upload is checked (size, an audio stream, the
declared duration) before the response starts, then decoded in chunks and transcribed off the
event loop. ``stream=true`` sends ``transcript.text.delta`` events as segments are recognised
and ``transcript.text.done`` at the end. Speech is synthesised sentence by sentence and each
sentence's audio is sent as soon as it is encoded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from omniloom.errors import InvalidRequest, ModelNotFound, OmniloomError
from omniloom.media.audio import Counted, probe, stream_chunks
from omniloom.media.audio_out import MEDIA_TYPES, encode_stream
from omniloom.serving.state import ServerState
from omniloom.speech.asr import TRANSCRIPTION_MODELS, Segment, TranscriptionOptions
from omniloom.speech.transcripts import TRANSCRIPT_FORMATS, srt, transcript_text, verbose_json, vtt
from omniloom.speech.tts import SPEECH_MODELS

router = APIRouter()
_IGNORED_INSTRUCTIONS = "instructions are ignored: a Piper voice cannot be steered by them"


def transcription_models(state: ServerState) -> list[str]:
    return [*TRANSCRIPTION_MODELS, state.transcriber().name]


def _check_model(model: str, known: list[str]) -> None:
    if model not in known:
        raise ModelNotFound(model, known)


async def _transcribe(
    request: Request,
    file: UploadFile,
    model: str,
    options: TranscriptionOptions,
    response_format: str,
    stream: bool,
):
    state: ServerState = request.app.state.omniloom
    asr = await run_in_threadpool(state.transcriber)
    _check_model(model, transcription_models(state))
    if response_format not in TRANSCRIPT_FORMATS:
        raise InvalidRequest(
            f"response_format '{response_format}' is not one of {', '.join(TRANSCRIPT_FORMATS)}.",
            param="response_format",
        )
    asr.check(options)
    data = await file.read()
    limits = state.settings.limits
    await run_in_threadpool(probe, data, limits)
    audio = Counted(stream_chunks(data, limits))
    segments = asr.segments(audio, options)
    if stream:
        return StreamingResponse(_deltas(segments), media_type="text/event-stream")
    found: list[Segment] = await run_in_threadpool(list, segments)
    return _render(found, response_format, options, audio.seconds)


def _render(segments: list[Segment], fmt: str, options: TranscriptionOptions, seconds: float):
    if fmt == "text":
        return PlainTextResponse(transcript_text(segments) + "\n")
    if fmt == "srt":
        return PlainTextResponse(srt(segments))
    if fmt == "vtt":
        return PlainTextResponse(vtt(segments), media_type="text/vtt")
    usage = {"type": "duration", "seconds": round(seconds)}
    if fmt == "json":
        return JSONResponse({"text": transcript_text(segments), "usage": usage})
    language = options.language or "en"
    granularities = set(options.granularities)
    return JSONResponse(verbose_json(segments, language, seconds, options.task, granularities))


async def _deltas(segments: Iterator[Segment]) -> AsyncIterator[bytes]:
    """Delta events as segments are recognised; audio that turns out to break a limit while
    it is decoded ends the stream with an error event (the status line is already sent)."""
    pieces = []
    try:
        async for segment in iterate_in_threadpool(segments):
            text = segment.text if pieces else segment.text.lstrip()
            pieces.append(text)
            yield _event({"type": "transcript.text.delta", "delta": text})
    except OmniloomError as exc:
        yield _event(exc.to_dict())
        return
    yield _event({"type": "transcript.text.done", "text": "".join(pieces)})


def _event(body: dict) -> bytes:
    return f"data: {json.dumps(body)}\n\n".encode()


@router.post("/v1/audio/transcriptions")
async def transcriptions(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    language: Annotated[str | None, Form()] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    timestamp_granularities: Annotated[
        list[Literal["word", "segment"]] | None, Form(alias="timestamp_granularities[]")
    ] = None,
    stream: Annotated[bool, Form()] = False,
):
    granularities = tuple(timestamp_granularities or ())
    options = TranscriptionOptions(language, prompt, temperature, granularities)
    return await _transcribe(request, file, model, options, response_format, stream)


@router.post("/v1/audio/translations")
async def translations(
    request: Request,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
):
    options = TranscriptionOptions(None, prompt, temperature, task="translate")
    return await _transcribe(request, file, model, options, response_format, stream=False)


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    input: str = Field(min_length=1)
    voice: str
    instructions: str | None = None
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"


@router.post("/v1/audio/speech")
async def speech(body: SpeechRequest, request: Request) -> StreamingResponse:
    state: ServerState = request.app.state.omniloom
    synthesizer = await run_in_threadpool(state.synthesizer)
    _check_model(body.model, [*SPEECH_MODELS, f"piper-{synthesizer.voice_name}"])
    synthesizer.check_voice(body.voice)
    limit = state.settings.limits.max_speech_chars
    if len(body.input) > limit:
        raise InvalidRequest(
            f"input is {len(body.input)} characters; the limit is {limit}.", param="input"
        )
    audio = encode_stream(synthesizer.speak(body.input, body.speed), body.response_format)
    headers = {"X-Omniloom-Note": _IGNORED_INSTRUCTIONS} if body.instructions else {}
    return StreamingResponse(
        iterate_in_threadpool(audio), media_type=MEDIA_TYPES[body.response_format], headers=headers
    )
