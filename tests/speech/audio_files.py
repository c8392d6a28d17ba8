"""Audio files for tests: speech from espeak-ng or Piper, silence and tones, written in each
container and codec users send (PyAV's encoders, as a recorder or converter would)."""

from __future__ import annotations

import io

import av
import numpy as np

CONTAINERS = {  # extension: (muxer, codec, sample format)
    "wav": ("wav", "pcm_s16le", "s16"),
    "mp3": ("mp3", "libmp3lame", "s16p"),
    "ogg": ("ogg", "libopus", "s16"),
    "flac": ("flac", "flac", "s16"),
    "webm": ("webm", "libopus", "s16"),
    "m4a": ("ipod", "aac", "fltp"),
}


def audio_file(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    """``samples`` (float32 mono) as a ``fmt`` file (a key of ``CONTAINERS``)."""
    muxer, codec, sample_format = CONTAINERS[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=muxer) as container:
        out_rate = 48_000 if codec == "libopus" else rate
        stream = container.add_stream(codec, rate=out_rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=out_rate)
        frame = av.AudioFrame.from_ndarray(
            samples.astype(np.float32)[None], format="flt", layout="mono"
        )
        frame.sample_rate = rate
        for piece in (*resampler.resample(frame), *resampler.resample(None)):
            piece.pts = None
            container.mux(stream.encode(piece))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def tone(seconds: float, rate: int = 16_000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
