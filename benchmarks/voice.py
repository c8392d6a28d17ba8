"""Voice pipeline: the realtime loop's latency stage by stage, real-time factors and WER.

In process: Whisper tiny.en and Piper's real-time factors (seconds of work per second of
audio) and the cascade's word error rate on held-out sentences in two voices — espeak-ng, a
voice no model here was trained on, and the embedded Piper voice. The native audio path
(Whisper encoder → projector → backbone) is compared with the cascade by
``benchmarks/native_audio.py``.

Then the realtime loop through a real server (``omniloom serve`` on a free port, or ``--url``):
each spoken question is streamed at speaking pace in 40 ms pieces, with a second of silence
after it. Per turn: VAD endpoint (``speech_stopped`` after the true end of speech), ASR
(transcript completed after that), first LLM token, first audio byte, and end of speech → first
audio; the answer counts as right when it holds an expected word. Barge-in: speech played over
a long answer, timed from its true onset to the response's cancellation. Medians over turns.
Prints a table and writes ``benchmarks/results/voice.json``.

Usage: ``.venv/bin/python benchmarks/voice.py [--sentences 12] [--questions 6] [--url ws://…]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from serving import cpu_name, free_port, start_omniloom, wait_healthy
from websockets.sync.client import connect

from omniloom.eval.speech import HELD_OUT_SENTENCES, SPOKEN_QUESTIONS, VOICES, answered, spoken
from omniloom.eval.wer import word_error_rate
from omniloom.media.audio import SAMPLE_RATE
from omniloom.media.audio_out import OUTPUT_RATE, pcm16, resample
from omniloom.speech.asr import Transcriber, TranscriptionOptions
from omniloom.speech.tts import Synthesizer

RESULTS = Path(__file__).parent / "results" / "voice.json"
PIECE = OUTPUT_RATE * 40 // 1000  # samples per append: 40 ms
LONG_ANSWER = "Tell me a long story about a dragon and a knight."
INTERRUPTION = "Wait, stop please."


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def speech_models(sentences: int) -> dict:
    """RTFs and the cascade's WER per voice, in process."""
    threads = len(os.sched_getaffinity(0))
    asr, tts = Transcriber(threads=threads), Synthesizer(threads=threads)
    texts = HELD_OUT_SENTENCES[:sentences]
    tts_work = tts_audio = 0.0
    out = {}
    for voice in VOICES:
        heard, asr_work, audio_s = [], 0.0, 0.0
        for text in texts:
            audio, took = timed(spoken, text, voice, tts)
            if voice == "piper":
                tts_work, tts_audio = tts_work + took, tts_audio + len(audio) / OUTPUT_RATE
            samples = resample(audio, OUTPUT_RATE, SAMPLE_RATE)
            segments, took = timed(
                lambda s: list(asr.segments(iter([s]), TranscriptionOptions())), samples
            )
            heard.append("".join(s.text for s in segments))
            asr_work, audio_s = asr_work + took, audio_s + len(samples) / SAMPLE_RATE
        out[voice] = {"wer": word_error_rate(list(texts), heard), "asr_rtf": asr_work / audio_s}
    out["tts_rtf"] = tts_work / tts_audio
    return out


class Turn:
    """One streamed utterance and the server's events, each with its arrival time."""

    def __init__(self, ws):
        self.ws, self.events, self.done = ws, [], threading.Event()
        self.error: Exception | None = None
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        try:
            for raw in self.ws:
                event = json.loads(raw)
                self.events.append((time.monotonic(), event))
                if event["type"] == "response.done":
                    self.done.set()
        except Exception as exc:  # the connection ended: the turn is over either way
            self.error = exc
            self.done.set()

    def speak(self, audio: np.ndarray) -> tuple[float, float]:
        """Stream ``audio`` (24 kHz) at speaking pace; the wall times its speech began and
        ended (first and last sample above a whisper)."""
        loud = np.flatnonzero(np.abs(audio) > 0.01)
        onset, end, start = loud[0], loud[-1], time.monotonic()
        for i in range(0, len(audio), PIECE):
            piece = base64.b64encode(pcm16(audio[i : i + PIECE])).decode()
            self.ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": piece}))
            time.sleep(max(0.0, start + (i + PIECE) / OUTPUT_RATE - time.monotonic()))
        return start + onset / OUTPUT_RATE, start + end / OUTPUT_RATE

    def first(self, kind: str, after: float = 0.0) -> float | None:
        return next((t for t, e in self.events if e["type"] == kind and t >= after), None)

    def text(self, kind: str, field: str) -> str:
        return next((e[field] for _, e in self.events if e["type"] == kind), "")


def _utterance(text: str, silence_s: float = 1.0) -> np.ndarray:
    gap = np.zeros(int(silence_s * OUTPUT_RATE), np.float32)
    return np.concatenate([gap[: OUTPUT_RATE // 2], spoken(text, "espeak"), gap])


def question_turn(url: str, question: str, accepted: tuple[str, ...]) -> dict:
    with connect(url, max_size=None, max_queue=None) as ws:
        ws.recv()  # session.created
        turn = Turn(ws)
        _, speech_end = turn.speak(_utterance(question))
        turn.done.wait(120)
    stopped = turn.first("input_audio_buffer.speech_stopped")
    heard = turn.first("conversation.item.input_audio_transcription.completed")
    token = turn.first("response.audio_transcript.delta")
    audio = turn.first("response.audio.delta")
    answer = turn.text("response.audio_transcript.done", "transcript")
    return {
        "question": question,
        "heard": turn.text("conversation.item.input_audio_transcription.completed", "transcript"),
        "answer": answer,
        "right": answered(answer, accepted),
        "vad_endpoint_s": stopped - speech_end,
        "asr_s": heard - stopped,
        "first_token_s": token - heard,
        "first_audio_s": audio - token,
        "speech_end_to_audio_s": audio - speech_end,
    }


def barge_in(url: str) -> dict:
    with connect(url, max_size=None, max_queue=None) as ws:
        ws.recv()
        ws.send(
            json.dumps({"type": "session.update", "session": {"instructions": "Answer at length."}})
        )
        turn = Turn(ws)
        turn.speak(_utterance(LONG_ANSWER))
        while turn.first("response.audio.delta") is None and not turn.done.is_set():
            time.sleep(0.01)
        onset, _ = turn.speak(_utterance(INTERRUPTION, silence_s=0.3))
        turn.done.wait(60)
    cancelled = next(
        (
            t
            for t, e in turn.events
            if e["type"] == "response.done" and e["response"]["status"] == "cancelled"
        ),
        None,
    )
    last_audio = max(
        (t for t, e in turn.events if e["type"] == "response.audio.delta"), default=0.0
    )
    return {
        "speech_onset_to_cancel_s": None if cancelled is None else cancelled - onset,
        "audio_after_onset_s": max(0.0, last_audio - onset),
    }


def realtime(url: str, questions: int) -> dict:
    turns = [question_turn(url, q, a) for q, a in SPOKEN_QUESTIONS[:questions]]
    stages = ("vad_endpoint_s", "asr_s", "first_token_s", "first_audio_s", "speech_end_to_audio_s")
    medians = {s: statistics.median(t[s] for t in turns) for s in stages}
    accuracy = sum(t["right"] for t in turns) / len(turns)
    return {"turns": turns, "median": medians, "accuracy": accuracy, "barge_in": barge_in(url)}


def print_table(models: dict, loop: dict, cpu: str) -> None:
    print(f"{cpu}; Whisper tiny.en (int8), Piper joe, omniloom-smol fp32")
    print(f"{'path':<10}{'voice':<9}{'WER':>7}{'ASR RTF':>9}")
    for voice in VOICES:
        row = models[voice]
        print(f"{'cascade':<10}{voice:<9}{row['wer']:>7.1%}{row['asr_rtf']:>9.3f}")
    print("native: benchmarks/native_audio.py")
    print(f"TTS RTF {models['tts_rtf']:.3f}")
    print("realtime loop, median over turns (s):")
    for stage, value in loop["median"].items():
        print(f"  {stage:<24}{value:>7.2f}")
    print(f"  spoken questions answered right: {loop['accuracy']:.0%}")
    b = loop["barge_in"]
    print(
        f"  barge-in: speech onset → cancelled {b['speech_onset_to_cancel_s']:.2f} s, audio sent after onset {b['audio_after_onset_s']:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=len(HELD_OUT_SENTENCES))
    parser.add_argument("--questions", type=int, default=len(SPOKEN_QUESTIONS))
    parser.add_argument("--url", help="a running server's ws://…/v1/realtime")
    args = parser.parse_args()
    models = speech_models(args.sentences)
    proc = None
    url = args.url
    if url is None:
        port = free_port()
        proc = start_omniloom(port, "float32")
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        url = f"ws://127.0.0.1:{port}/v1/realtime"
    try:
        loop = realtime(url, args.questions)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print_table(models, loop, cpu_name())
    record = {"cpu": cpu_name(), "speech_models": models, "realtime": loop}
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
