"""Audio as Qwen2-Audio takes it: Whisper log-mel windows and a span of ``<|AUDIO|>`` tokens.

Each clip becomes ``<|audio_bos|> <|AUDIO|>×N <|audio_eos|>``, N being what the encoder gives
for its frames: 25 tokens per second (``ceil(samples / 160)`` mel frames, halved by the
convolution, halved again by the pooling). The count follows from the duration alone, so
``/tokenize`` knows it before any feature is computed. ``transformers``' processor cuts a clip
at 30 s; here a longer clip is cut into 30-second windows whose tokens follow one another in
the same span, so nothing is dropped (up to 30 s both agree exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from omniloom.media.audio import DecodedAudio
from omniloom.processing.log_mel import WINDOW_SAMPLES, frames, log_mel, pooled_positions


@dataclass(frozen=True)
class Qwen2AudioTokens:
    bos: int  # <|audio_bos|>
    pad: int  # <|AUDIO|>, the placeholder the encoder's outputs replace
    eos: int  # <|audio_eos|>


def windows(samples: np.ndarray) -> list[np.ndarray]:
    """The clip in 30-second windows; a last window too short for one token is dropped."""
    pieces = [samples[i : i + WINDOW_SAMPLES] for i in range(0, len(samples), WINDOW_SAMPLES)]
    return [p for p in pieces if window_tokens(len(p))] or pieces[:1]


def window_tokens(num_samples: int) -> int:
    return pooled_positions(frames(num_samples))


def audio_tokens(num_samples: int) -> int:
    """Placeholders for a clip of ``num_samples`` 16 kHz samples."""
    full, rest = divmod(num_samples, WINDOW_SAMPLES)
    return full * window_tokens(WINDOW_SAMPLES) + window_tokens(rest)


@dataclass(frozen=True)
class Qwen2AudioClip:
    decoded: DecodedAudio
    n_mels: int
    tokens: Qwen2AudioTokens
    modality: str = "audio"

    @property
    def content_hash(self) -> str:
        return self.decoded.content_hash

    def num_placeholders(self) -> int:
        return audio_tokens(len(self.decoded.samples))

    def cache_key(self) -> str:
        return f"whisper-mel/{self.n_mels}/30s"

    def token_ids(self) -> list[int]:
        t = self.tokens
        return [t.bos, *[t.pad] * self.num_placeholders(), t.eos]

    def features(self) -> list[tuple[torch.Tensor, int]]:
        """Per window: its (n_mels, 3000) log-mel features and the frames the clip fills."""
        return [(log_mel(w, self.n_mels), frames(len(w))) for w in windows(self.decoded.samples)]


@dataclass(frozen=True)
class Qwen2AudioProcessor:
    n_mels: int
    tokens: Qwen2AudioTokens

    def prepare(self, decoded: DecodedAudio, _detail: str | None = None, _settings=None):
        return Qwen2AudioClip(decoded, self.n_mels, self.tokens)
