"""Audio as Whisper-encoder models take it: log-mel windows and one span of audio tokens.

Each clip becomes ``start, pad×N, end`` (Qwen2-Audio's ``<|audio_bos|> <|AUDIO|>×N
<|audio_eos|>``; the embedded model's ``<|audio_start|> <|audio_pad|>×N <|audio_end|>``). N is
what the encoder side gives for the clip's frames: ``ceil(samples / 160)`` mel frames, halved
by the encoder's strided convolution (50 positions per second), then merged ``stride`` at a
time (2 for Qwen2-Audio's pooling: 25 tokens per second; 4 for the embedded projector: 12.5).
The count follows from the duration alone, so ``/tokenize`` knows it before any feature is
computed. ``transformers``' Qwen2-Audio processor cuts a clip at 30 s; here a longer clip is cut
into 30-second windows whose tokens follow one another in the same span, so nothing is dropped
(up to 30 s both agree exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from omniloom.media.audio import DecodedAudio
from omniloom.processing.log_mel import (
    WINDOW_SAMPLES,
    frames,
    log_mel,
    positions_after_convs,
)


@dataclass(frozen=True)
class AudioSpanTokens:
    start: int
    pad: int  # the placeholder the encoder side's outputs replace
    end: int


def window_tokens(num_samples: int, stride: int) -> int:
    """Tokens one window of ``num_samples`` gives: its encoder positions, ``stride`` a token."""
    return positions_after_convs(frames(num_samples)) // stride if num_samples else 0


def audio_tokens(num_samples: int, stride: int = 2) -> int:
    """Placeholders for a clip of ``num_samples`` 16 kHz samples."""
    full, rest = divmod(num_samples, WINDOW_SAMPLES)
    return full * window_tokens(WINDOW_SAMPLES, stride) + window_tokens(rest, stride)


def windows(samples: np.ndarray, stride: int) -> list[np.ndarray]:
    """The clip in 30-second windows, without a last one too short for a token."""
    pieces = [samples[i : i + WINDOW_SAMPLES] for i in range(0, len(samples), WINDOW_SAMPLES)]
    return [p for p in pieces if window_tokens(len(p), stride)]


@dataclass(frozen=True)
class WhisperAudioClip:
    decoded: DecodedAudio
    n_mels: int
    stride: int
    tokens: AudioSpanTokens
    modality: str = "audio"

    @property
    def content_hash(self) -> str:
        return self.decoded.content_hash

    def num_placeholders(self) -> int:
        return audio_tokens(len(self.decoded.samples), self.stride)

    def cache_key(self) -> str:
        return f"whisper-mel/{self.n_mels}/30s/stride={self.stride}"

    def token_ids(self) -> list[int]:
        t = self.tokens
        return [t.start, *[t.pad] * self.num_placeholders(), t.end]

    def features(self) -> list[tuple[torch.Tensor, int]]:
        """Per window: its (n_mels, 3000) log-mel features and the frames the clip fills."""
        pieces = windows(self.decoded.samples, self.stride)
        return [(log_mel(w, self.n_mels), frames(len(w))) for w in pieces]


@dataclass(frozen=True)
class WhisperAudioProcessor:
    n_mels: int
    stride: int
    tokens: AudioSpanTokens

    def prepare(self, decoded: DecodedAudio, _detail: str | None = None, _settings=None):
        return WhisperAudioClip(decoded, self.n_mels, self.stride, self.tokens)
