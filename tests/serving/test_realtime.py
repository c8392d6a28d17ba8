"""/v1/realtime end to end: a spoken question streamed into the real server over a WebSocket,
server VAD, transcription events, the spoken answer, barge-in, manual turns and bad events."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from websockets.sync.client import connect

from omniloom.media.audio_out import OUTPUT_RATE, pcm16, resample
from omniloom.speech import espeak

PIECE_BYTES = 2 * OUTPUT_RATE * 40 // 1000  # 40 ms of pcm16


def _speech(text: str, silence_s: float = 1.0) -> bytes:
    samples, rate = espeak.speak(text)
    gap = np.zeros(int(silence_s * OUTPUT_RATE), np.float32)
    return pcm16(np.concatenate([gap[: OUTPUT_RATE // 2], resample(samples, rate), gap]))


def _append(ws, audio: bytes) -> None:
    for start in range(0, len(audio), PIECE_BYTES):
        piece = base64.b64encode(audio[start : start + PIECE_BYTES]).decode()
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))


def _until(ws, kind: str, seen: list[dict] | None = None) -> dict:
    while True:
        event = json.loads(ws.recv(timeout=120))
        if seen is not None:
            seen.append(event)
        if event["type"] == kind:
            return event


@pytest.fixture
def ws(server_url):
    url = server_url.replace("http", "ws") + "/v1/realtime"
    with connect(url, max_size=None, max_queue=None) as socket:  # reads never hold up sends
        assert json.loads(socket.recv(timeout=120))["type"] == "session.created"
        yield socket


def test_a_spoken_question_gets_a_spoken_answer(ws):
    _append(ws, _speech("What is the capital of France?"))
    events: list[dict] = []
    done = _until(ws, "response.done", events)
    kinds = [e["type"] for e in events]
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.audio.delta",
        "response.audio_transcript.done",
    ]
    assert [kinds.index(k) for k in order] == sorted(kinds.index(k) for k in order)
    heard = next(e for e in events if e["type"].endswith("transcription.completed"))
    assert "capital" in heard["transcript"]  # espeak-ng's rendering varies a little per call
    spoken = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.audio.delta"
    )
    said = next(e for e in events if e["type"] == "response.audio_transcript.done")["transcript"]
    assert said.strip() and len(spoken) / 2 / OUTPUT_RATE > 0.8
    assert done["response"]["status"] == "completed" and done["response"]["usage"]["total_tokens"]


def test_speech_during_the_answer_cancels_it(ws):
    ws.send(
        json.dumps({"type": "session.update", "session": {"instructions": "Answer at length."}})
    )
    _until(ws, "session.updated")
    _append(ws, _speech("Tell me a long story about a dragon and a knight.", silence_s=0.8))
    first_audio = _until(ws, "response.audio.delta")
    _append(ws, _speech("Stop.", silence_s=0.8))  # the user talks over the answer
    events: list[dict] = []
    done = _until(ws, "response.done", events)
    assert done["response"]["status"] == "cancelled"
    kinds = [e["type"] for e in events]
    assert "input_audio_buffer.speech_started" in kinds
    started = kinds.index("input_audio_buffer.speech_started")
    old = first_audio["response_id"]
    assert not [
        e
        for e in events[started:]
        if e.get("response_id") == old and e["type"] == "response.audio.delta"
    ]
    truncated = _until(ws, "conversation.item.truncated")
    assert truncated["item_id"] == first_audio["item_id"] and truncated["audio_end_ms"] >= 0


def test_manual_turns_without_vad(ws):
    ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
    assert _until(ws, "session.updated")["session"]["turn_detection"] is None
    _append(ws, _speech("Please send me the report."))
    ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
    heard = _until(ws, "conversation.item.input_audio_transcription.completed")
    assert "report" in heard["transcript"]
    ws.send(json.dumps({"type": "response.create"}))
    assert _until(ws, "response.done")["response"]["status"] == "completed"


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"type": "conversation.item.create"}, "Unsupported event type"),
        ({"type": "input_audio_buffer.append", "audio": "!!!"}, "not valid base64"),
        ({"type": "session.update", "session": {"voice": "darth"}}, "Unknown voice"),
        ({"type": "input_audio_buffer.commit"}, "empty"),
    ],
    ids=["unknown", "base64", "voice", "empty-commit"],
)
def test_bad_events_get_error_events_and_the_session_goes_on(ws, event, message):
    if event["type"] == "input_audio_buffer.commit":
        ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
        _until(ws, "session.updated")
    ws.send(json.dumps(event))
    assert message in _until(ws, "error")["error"]["message"]
    ws.send(json.dumps({"type": "session.update", "session": {}}))
    assert _until(ws, "session.updated")["type"] == "session.updated"
