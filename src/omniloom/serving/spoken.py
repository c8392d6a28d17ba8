"""Spoken answers: a chat completion with ``modalities: ["text", "audio"]`` has its answer
spoken by the speech synthesiser — whole, in ``message.audio`` (base64 ``data``, its
``transcript``, an ``id`` and ``expires_at``), or, when streamed, sentence by sentence as the
text arrives (``delta.audio`` chunks: transcript pieces, then 16-bit PCM at 24 kHz per
sentence). ``usage`` counts the speech as audio tokens of 50 ms each.
"""

from __future__ import annotations

import base64
import math
import re
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from starlette.concurrency import run_in_threadpool

from omniloom.errors import InvalidRequest
from omniloom.media.audio_out import OUTPUT_RATE, encode, pcm16
from omniloom.serving.schemas import ChatCompletionRequest
from omniloom.speech.tts import Synthesizer

FORMATS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "opus": "opus", "aac": "aac", "pcm16": "pcm"}
SECONDS_PER_AUDIO_TOKEN = 0.05
KEPT_SECONDS = 3600  # ``expires_at``: how long a client may refer back to the audio
_SENTENCE_END = re.compile(r"[.!?;:\n]\s")
_CLAUSE_END = re.compile(r",\s")
_FIRST_CLAUSE_WORDS = 3  # a first clause this long is spoken without waiting for its sentence
_WORD = re.compile(r"\S+\s+")
_MAX_WORDS = (8, 24)  # a piece without punctuation is cut after this many words (first, later)


@dataclass(frozen=True)
class Voice:
    voice: str
    fmt: str  # one of FORMATS' values

    @classmethod
    def from_request(cls, req: ChatCompletionRequest, synthesizer: Synthesizer | None):
        """The spoken-answer settings of ``req``, or None for a text-only answer."""
        if not req.wants_audio:
            return None
        if req.audio is None:
            raise InvalidRequest(
                "modalities includes 'audio', so 'audio' (voice and format) is required.",
                param="audio",
            )
        if synthesizer is None:
            raise InvalidRequest("Audio output is not available on this server.", param="audio")
        synthesizer.check_voice(req.audio.voice)
        if req.stream and req.audio.format != "pcm16":
            raise InvalidRequest(
                "A streamed spoken answer comes as pcm16; set audio.format to 'pcm16'.",
                param="audio.format",
            )
        return cls(req.audio.voice, FORMATS[req.audio.format])


def audio_tokens(samples: int) -> int:
    return math.ceil(samples / OUTPUT_RATE / SECONDS_PER_AUDIO_TOKEN)


def audio_id() -> str:
    return f"audio_{uuid.uuid4().hex}"


def expires_at() -> int:
    return int(time.time()) + KEPT_SECONDS


def spoken_message(synthesizer: Synthesizer, text: str, voice: Voice) -> tuple[dict, int]:
    """``message.audio`` for ``text`` and the audio tokens it counts as."""
    clips = list(synthesizer.speak(text)) or [np.zeros(0, np.float32)]
    samples = np.concatenate(clips)
    audio = {
        "id": audio_id(),
        "data": base64.b64encode(encode(samples, voice.fmt)).decode(),
        "expires_at": expires_at(),
        "transcript": text,
    }
    return audio, audio_tokens(len(samples))


def spoken_pcm(synthesizer: Synthesizer, sentence: str) -> tuple[str, int]:
    """A sentence as base64 16-bit PCM, and its sample count."""
    clips = list(synthesizer.speak(sentence))
    samples = np.concatenate(clips) if clips else np.zeros(0, np.float32)
    return base64.b64encode(pcm16(samples)).decode(), len(samples)


@dataclass
class SentenceBuffer:
    """Text as it streams in, handed out a sentence at a time; with ``first_clause``, the
    answer's first clause goes on its own (a voice loop's first audio comes sooner). A run of
    words without punctuation is cut at a word boundary (8 words for the first piece, 24
    after), so a rambling answer is still heard as it is written."""

    text: str = ""
    samples: int = 0  # spoken so far, for usage
    id: str = field(default_factory=audio_id)
    first_clause: bool = False
    spoke: bool = False  # a piece has been handed out

    def feed(self, piece: str) -> list[str]:
        self.text += piece
        done = []
        while end := self._next_end():
            done.append(self.text[:end].strip())
            self.text = self.text[end:]
            self.first_clause, self.spoke = False, True
        return [s for s in done if s]

    def _next_end(self) -> int:
        """Where the next piece to speak ends (0: not yet)."""
        if match := _SENTENCE_END.search(self.text):
            return match.end()
        clause = _CLAUSE_END.search(self.text)
        if (
            self.first_clause
            and clause
            and len(self.text[: clause.end()].split()) >= _FIRST_CLAUSE_WORDS
        ):
            return clause.end()
        words = list(_WORD.finditer(self.text))
        limit = _MAX_WORDS[1] if self.spoke else _MAX_WORDS[0]
        return words[limit - 1].end() if len(words) >= limit else 0

    def rest(self) -> str:
        rest, self.text = self.text.strip(), ""
        return rest


def with_audio_usage(usage: dict, tokens: int) -> dict:
    """``usage`` with the spoken answer's audio tokens counted in, as OpenAI counts them."""
    if not usage or not tokens:
        return usage
    details = usage["completion_tokens_details"] | {"audio_tokens": tokens}
    return usage | {
        "completion_tokens": usage["completion_tokens"] + tokens,
        "total_tokens": usage["total_tokens"] + tokens,
        "completion_tokens_details": details,
    }


class SpokenStream:
    """The ``delta.audio`` pieces of a streamed spoken answer, choice by choice."""

    def __init__(self, synthesizer: Synthesizer, choices: int):
        self._synthesizer = synthesizer
        self._buffers = [SentenceBuffer() for _ in range(choices)]

    @property
    def audio_tokens(self) -> int:
        return sum(audio_tokens(b.samples) for b in self._buffers)

    async def text(self, index: int, piece: str) -> list[dict]:
        """The transcript piece, then the audio of every sentence it completes."""
        buffer = self._buffers[index]
        deltas = [{"audio": {"id": buffer.id, "transcript": piece}}]
        for sentence in buffer.feed(piece):
            deltas.append(await self._speak(buffer, sentence))
        return deltas

    async def finish(self, index: int) -> list[dict]:
        """The last sentence's audio, then when the audio expires."""
        buffer = self._buffers[index]
        rest = buffer.rest()
        deltas = [await self._speak(buffer, rest)] if rest else []
        return [*deltas, {"audio": {"id": buffer.id, "expires_at": expires_at()}}]

    async def _speak(self, buffer: SentenceBuffer, sentence: str) -> dict:
        data, samples = await run_in_threadpool(spoken_pcm, self._synthesizer, sentence)
        buffer.samples += samples
        return {"audio": {"id": buffer.id, "data": data}}
