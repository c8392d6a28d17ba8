"""``/v1/realtime``: a voice conversation over a WebSocket, in a subset of OpenAI's Realtime
events.

The client streams 24 kHz pcm16 (``input_audio_buffer.append``). With server VAD (the default)
Silero finds where speech starts and stops; at the stop the utterance is committed, transcribed
(``conversation.item.input_audio_transcription.delta`` per segment, then ``.completed``) and
answered: the language model's tokens stream out as ``response.audio_transcript.delta`` and are
spoken a clause at a time (``response.audio.delta``, 24 kHz pcm16). Speech that starts while an
answer is being spoken cancels it (barge-in): no more audio is sent, the response ends as
``cancelled``, and the assistant item is truncated at the audio the client has had time to play
(``conversation.item.truncated``). Without VAD (``turn_detection: null``) the client commits
and asks for responses itself. The events this subset handles are listed in ``CLIENT_EVENTS``;
any other gets an ``error`` event and the session goes on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from omniloom.engine.engine import Delta, Done
from omniloom.engine.sampling import SamplingParams
from omniloom.errors import OmniloomError
from omniloom.media.audio import SAMPLE_RATE
from omniloom.media.audio_out import OUTPUT_RATE, Resampler
from omniloom.processing.prompt import Message, TextPart, build_prompt
from omniloom.serving.responses import job_usage
from omniloom.serving.spoken import SentenceBuffer, spoken_pcm
from omniloom.serving.state import ServerState
from omniloom.speech.asr import TranscriptionOptions
from omniloom.speech.vad import Endpointer, SpeechStarted, SpeechStopped, TurnDetection

router = APIRouter()
log = logging.getLogger(__name__)
CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "response.create",
    "response.cancel",
    "conversation.item.truncate",
)
_MAX_ANSWER_TOKENS = 256
_MAX_BUFFER_SECONDS = 120  # a committed turn without VAD; longer appends are refused
# an endpointed utterance is speech already: greedy decoding without a second VAD pass
_UTTERANCE = TranscriptionOptions(beam_size=1, find_speech=False)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


@dataclass
class Item:
    id: str
    role: str  # "user" or "assistant"
    text: str = ""


@dataclass
class Playback:
    """An answer being spoken: what was sent, and when sending began (for truncation)."""

    item: Item
    started: float | None = None  # monotonic time of the first audio delta
    sent_ms: int = 0
    spoken_text: list[tuple[int, str]] = field(default_factory=list)  # (audio ms, text) pieces

    def played_ms(self) -> int:
        """What the client can have played: real time since the first audio, at most all sent."""
        if self.started is None:
            return 0
        return min(self.sent_ms, int((time.monotonic() - self.started) * 1000))

    def text_until(self, ms: int) -> str:
        return "".join(text for end, text in self.spoken_text if end <= ms)


class Session:
    """One WebSocket conversation."""

    def __init__(self, websocket: WebSocket, state: ServerState):
        self.ws, self.state = websocket, state
        self.id = _id("sess")
        self.detection: TurnDetection | None = TurnDetection()
        self.instructions = ""
        self.voice = "joe"
        self.endpointer: Endpointer | None = None
        self.buffer: list[np.ndarray] = []  # 16 kHz audio since the last commit (no VAD)
        self.to_16k = Resampler(OUTPUT_RATE, SAMPLE_RATE)  # the input stream, chunk by chunk
        self.items: list[Item] = []
        self.response: asyncio.Task | None = None
        self.stop = asyncio.Event()  # set to end the answer being spoken
        self.playback: Playback | None = None
        self._sending = asyncio.Lock()  # the receive loop and the answer task both send

    async def send(self, kind: str, **fields) -> None:
        body = json.dumps({"event_id": _id("event"), "type": kind, **fields})
        async with self._sending:
            await self.ws.send_text(body)

    async def error(self, message: str, code: str = "invalid_request_error") -> None:
        await self.send("error", error={"type": code, "message": message})

    def session_body(self) -> dict:
        detection = self.detection
        turn = None if detection is None else {"type": "server_vad"} | detection.__dict__
        return {
            "id": self.id,
            "object": "realtime.session",
            "model": self.state.model.name,
            "modalities": ["text", "audio"],
            "instructions": self.instructions,
            "voice": self.voice,
            "input_audio_format": "pcm16",
            "output_audio_format": "pcm16",
            "turn_detection": turn,
            "input_audio_transcription": {"model": self.state.transcriber().name},
        }

    async def run(self) -> None:
        await run_in_threadpool(self.state.transcriber)
        synthesizer = await run_in_threadpool(self.state.synthesizer)
        self.endpointer = Endpointer(self.detection)
        self.synthesizer = synthesizer
        await self.send("session.created", session=self.session_body())
        while True:
            try:
                event = json.loads(await self.ws.receive_text())
            except json.JSONDecodeError:
                await self.error("The event is not valid JSON.")
                continue
            await self.handle(event if isinstance(event, dict) else {})

    async def handle(self, event: dict) -> None:
        kind = event.get("type")
        handler = {
            "session.update": self.update,
            "input_audio_buffer.append": self.append,
            "input_audio_buffer.commit": self.commit_buffer,
            "input_audio_buffer.clear": self.clear,
            "response.create": self.create_response,
            "response.cancel": self.cancel,
            "conversation.item.truncate": self.truncate,
        }.get(kind)
        if handler is None:
            await self.error(
                f"Unsupported event type {kind!r}; supported: {', '.join(CLIENT_EVENTS)}."
            )
            return
        try:
            await handler(event)
        except OmniloomError as exc:
            await self.error(exc.message)

    async def update(self, event: dict) -> None:
        session = event.get("session") or {}
        if "instructions" in session:
            self.instructions = str(session["instructions"] or "")
        if "voice" in session:
            self.synthesizer.check_voice(session["voice"])
            self.voice = session["voice"]
        if "turn_detection" in session:
            self.detection = _turn_detection(session["turn_detection"])
            self.endpointer = Endpointer(self.detection) if self.detection else None
        await self.send("session.updated", session=self.session_body())

    async def append(self, event: dict) -> None:
        try:
            raw = base64.b64decode(event.get("audio") or "", validate=True)
        except ValueError:
            await self.error("input_audio_buffer.append: audio is not valid base64.")
            return
        samples = np.frombuffer(raw[: len(raw) // 2 * 2], "<i2").astype(np.float32) / 32768.0
        audio = self.to_16k(samples)
        if self.detection is None:
            if sum(len(b) for b in self.buffer) + len(audio) > _MAX_BUFFER_SECONDS * SAMPLE_RATE:
                await self.error(f"The input buffer is over {_MAX_BUFFER_SECONDS} s; commit it.")
                return
            self.buffer.append(audio)
            return
        for found in self.endpointer.feed(audio):
            if isinstance(found, SpeechStarted):
                await self.send(
                    "input_audio_buffer.speech_started", audio_start_ms=found.ms, item_id=None
                )
                await self.barge_in()
            elif isinstance(found, SpeechStopped):
                await self.send("input_audio_buffer.speech_stopped", audio_end_ms=found.ms)
                await self.commit(found.audio, respond=True)

    async def commit_buffer(self, _event: dict) -> None:
        audio = np.concatenate(self.buffer) if self.buffer else np.zeros(0, np.float32)
        self.buffer = []
        if not len(audio):
            await self.error("input_audio_buffer.commit: the buffer is empty.")
            return
        await self.commit(audio, respond=False)

    async def clear(self, _event: dict) -> None:
        self.buffer = []
        if self.endpointer is not None:
            self.endpointer.reset()
        await self.send("input_audio_buffer.cleared")

    async def commit(self, audio: np.ndarray, respond: bool) -> None:
        item = Item(_id("item"), "user")
        self.items.append(item)
        await self.send("input_audio_buffer.committed", item_id=item.id)
        content = [{"type": "input_audio", "transcript": None}]
        await self.send(
            "conversation.item.created",
            item={"id": item.id, "type": "message", "role": "user", "content": content},
        )
        for segment in await run_in_threadpool(self._transcribe, audio):
            item.text += segment.text
            await self.send(
                "conversation.item.input_audio_transcription.delta",
                item_id=item.id,
                content_index=0,
                delta=segment.text,
            )
        item.text = item.text.strip()
        await self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=item.id,
            content_index=0,
            transcript=item.text,
        )
        if respond and item.text:
            await self.create_response({})

    def _transcribe(self, audio: np.ndarray) -> list:
        asr = self.state.transcriber()
        return list(asr.segments(iter([audio]), _UTTERANCE))

    async def create_response(self, _event: dict) -> None:
        if self.response is not None and not self.response.done():
            await self.error("A response is already in progress; cancel it first.")
            return
        self.response = asyncio.create_task(self.respond())

    async def cancel(self, _event: dict) -> None:
        await self.barge_in()

    async def barge_in(self) -> None:
        """Stop the answer being spoken and cut its item at what the client has played."""
        task, playback = self.response, self.playback
        if task is None or task.done():
            return
        self.stop.set()  # checked at every step: a task's cancel alone can be lost in a race
        task.cancel()
        await asyncio.wait({task})
        if playback is not None:
            played = playback.played_ms()
            playback.item.text = playback.text_until(played)
            await self.send(
                "conversation.item.truncated",
                item_id=playback.item.id,
                content_index=0,
                audio_end_ms=played,
            )

    async def truncate(self, event: dict) -> None:
        item = next((i for i in self.items if i.id == event.get("item_id")), None)
        playback = self.playback
        if item is None or playback is None or playback.item is not item:
            await self.error("conversation.item.truncate: no spoken assistant item with that id.")
            return
        ms = int(event.get("audio_end_ms") or 0)
        item.text = playback.text_until(ms)
        await self.send(
            "conversation.item.truncated", item_id=item.id, content_index=0, audio_end_ms=ms
        )

    async def respond(self) -> None:
        response_id, item = _id("resp"), Item(_id("item"), "assistant")
        self.playback, self.stop = Playback(item), asyncio.Event()
        await self.send("response.created", response={"id": response_id, "status": "in_progress"})
        await self.send(
            "response.output_item.added",
            response_id=response_id,
            item={"id": item.id, "type": "message", "role": "assistant"},
        )
        status, usage = "cancelled", None
        try:
            usage = await self._speak_answer(response_id, item)
            status = "cancelled" if self.stop.is_set() else "completed"
        finally:
            self.items.append(item)
            body = {"id": response_id, "status": status, "usage": usage}
            with contextlib.suppress(Exception):
                await asyncio.shield(self.send("response.done", response=body))

    async def _speak_answer(self, response_id: str, item: Item) -> dict | None:
        prompt = build_prompt(
            self._messages(), self.state.model.template, self.state.model.tokenizer
        )
        params = SamplingParams(max_tokens=_MAX_ANSWER_TOKENS, temperature=0.0)
        submitted = self.state.submit(prompt, params, None, response_id)
        sentences, usage = SentenceBuffer(first_clause=True), None
        where = {
            "response_id": response_id,
            "item_id": item.id,
            "output_index": 0,
            "content_index": 0,
        }
        async with contextlib.aclosing(self.state.events(submitted)) as events:  # cancels the job
            async for event in events:
                if self.stop.is_set():
                    return usage
                await self._answer_event(event, item, sentences, where)
                if isinstance(event, Done):
                    usage = job_usage(prompt, event.stats)
        if self.stop.is_set():
            return usage
        if rest := sentences.rest():
            await self._say(rest, where)
        await self.send("response.audio.done", **where)
        await self.send("response.audio_transcript.done", transcript=item.text, **where)
        return usage

    async def _answer_event(self, event, item: Item, sentences: SentenceBuffer, where: dict):
        if isinstance(event, Delta):
            item.text += event.text
            await self.send("response.audio_transcript.delta", delta=event.text, **where)
            for sentence in sentences.feed(event.text):
                await self._say(sentence, where)

    async def _say(self, sentence: str, where: dict) -> None:
        # asyncio's own thread hand-off: a barge-in's cancel lands at once (the synthesis in
        # the thread is left to finish), where anyio's defers it until the thread returns
        data, samples = await asyncio.to_thread(spoken_pcm, self.synthesizer, sentence)
        playback = self.playback
        if self.stop.is_set():
            return
        if playback.started is None:
            playback.started = time.monotonic()
        playback.sent_ms += samples * 1000 // OUTPUT_RATE
        playback.spoken_text.append((playback.sent_ms, sentence + " "))
        await self.send("response.audio.delta", delta=data, **where)

    def _messages(self) -> list[Message]:
        messages = [Message("system", [TextPart(self.instructions)])] if self.instructions else []
        return messages + [Message(i.role, [TextPart(i.text)]) for i in self.items if i.text]


def _subprotocol(websocket: WebSocket) -> str | None:
    """Echo the ``realtime`` subprotocol where the client offered it (browsers require it)."""
    offered = [p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")]
    return "realtime" if "realtime" in offered else None


def _turn_detection(spec) -> TurnDetection | None:
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type", "server_vad") != "server_vad":
        raise OmniloomError("turn_detection must be null or {type: 'server_vad', ...}.")
    defaults = TurnDetection()
    return TurnDetection(
        threshold=float(spec.get("threshold", defaults.threshold)),
        prefix_padding_ms=int(spec.get("prefix_padding_ms", defaults.prefix_padding_ms)),
        silence_duration_ms=int(spec.get("silence_duration_ms", defaults.silence_duration_ms)),
    )


def _authorized(websocket: WebSocket, state: ServerState) -> bool:
    """With API keys configured, a key in ``Authorization`` or, as browsers must send it, in
    the ``openai-insecure-api-key.<key>`` subprotocol."""
    if state.keys is None:
        return True
    header = websocket.headers.get("authorization")
    for protocol in websocket.headers.get("sec-websocket-protocol", "").split(","):
        if protocol.strip().startswith("openai-insecure-api-key."):
            header = "Bearer " + protocol.strip().removeprefix("openai-insecure-api-key.")
    try:
        state.keys.admit(state.keys.authenticate(header))
    except OmniloomError:
        return False
    return True


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    state: ServerState = websocket.app.state.omniloom
    if not _authorized(websocket, state):
        await websocket.close(code=1008, reason="a valid API key is required")
        return
    await websocket.accept(subprotocol=_subprotocol(websocket))
    session = Session(websocket, state)
    try:
        await session.run()
    except WebSocketDisconnect:
        pass
    except Exception:  # the session is over; say so where the socket still takes it
        log.exception("realtime session failed", extra={"fields": {"session": session.id}})
        with contextlib.suppress(Exception):
            await session.error(
                "The server had an internal error; the session ends.", "server_error"
            )
            await websocket.close(code=1011)
    finally:
        if session.response is not None:
            session.response.cancel()
