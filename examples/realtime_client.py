"""Talk to omniloom's /v1/realtime from a wav file and save the spoken answer.

Streams the file as 24 kHz pcm16 in 40 ms pieces at the pace of speech (``--fast``: as fast as
the socket takes it), then a second of silence so the server's VAD hears the turn end; prints
what the server heard and answered, and how long after the end of speech the first audio came.

    .venv/bin/python examples/realtime_client.py question.wav --out answer.wav
"""

from __future__ import annotations

import argparse
import base64
import json
import time
import wave

import numpy as np
from websockets.sync.client import connect

from omniloom.config import Limits
from omniloom.media.audio import decode_audio
from omniloom.media.audio_out import OUTPUT_RATE, pcm16, resample

PIECE = OUTPUT_RATE * 40 // 1000  # 40 ms


def speech_pcm(path: str) -> bytes:
    """The file as 24 kHz pcm16, then one second of silence."""
    with open(path, "rb") as f:
        samples = decode_audio(f.read(), Limits()).samples
    return pcm16(np.concatenate([resample(samples, 16_000), np.zeros(OUTPUT_RATE, np.float32)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav")
    parser.add_argument("--url", default="ws://127.0.0.1:8000/v1/realtime")
    parser.add_argument("--out", default="answer.wav")
    parser.add_argument("--fast", action="store_true", help="send without waiting in real time")
    args = parser.parse_args()
    audio, answer = speech_pcm(args.wav), bytearray()
    with connect(args.url, max_size=None) as ws:
        print(json.loads(ws.recv())["type"])  # session.created
        for start in range(0, len(audio), 2 * PIECE):
            piece = base64.b64encode(audio[start : start + 2 * PIECE]).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
            if not args.fast:
                time.sleep(0.04)
        stopped, first_audio = None, None
        while True:
            event = json.loads(ws.recv())
            kind = event["type"]
            if kind == "input_audio_buffer.speech_stopped":
                stopped = time.monotonic()
            elif kind == "conversation.item.input_audio_transcription.completed":
                print("heard:", event["transcript"])
            elif kind == "response.audio.delta":
                first_audio = first_audio or time.monotonic()
                answer += base64.b64decode(event["delta"])
            elif kind == "response.audio_transcript.done":
                print("answered:", event["transcript"])
            elif kind == "response.done":
                break
    with wave.open(args.out, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(OUTPUT_RATE)
        out.writeframes(bytes(answer))
    if stopped and first_audio:
        print(f"first audio {first_audio - stopped:.2f} s after the server heard the turn end")
    print(f"wrote {args.out} ({len(answer) / 2 / OUTPUT_RATE:.1f} s)")


if __name__ == "__main__":
    main()
