"""Encode synthesised speech as it is produced, in the formats OpenAI's speech API returns.

Chunks of float32 samples go in (one per sentence); bytes of the chosen format come out after
each chunk, so a client starts playing before the whole answer is spoken. Everything is
resampled to 24 kHz mono, OpenAI's rate. ``wav`` gets a streaming header (sizes left open, as
OpenAI's streamed wav has them) and ``pcm`` is raw 16-bit little-endian; mp3, opus (in Ogg),
flac and aac (ADTS) go through FFmpeg's encoders.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator

import av
import numpy as np

OUTPUT_RATE = 24_000
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_CONTAINERS = {  # format: (muxer, codec, sample format)
    "mp3": ("mp3", "libmp3lame", "s16p"),
    "opus": ("ogg", "libopus", "s16"),
    "aac": ("adts", "aac", "fltp"),
    "flac": ("flac", "flac", "s16"),
}


class Resampler:
    """FFmpeg's resampler over a stream of float32 mono chunks, its filter state carried from
    one chunk to the next (a chunk resampled alone starts its filter afresh at every edge)."""

    def __init__(self, rate: int, target: int):
        self.rate = rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=target)

    def __call__(self, samples: np.ndarray | None) -> np.ndarray:
        """The next piece of output; ``None`` flushes what the filter still holds."""
        frame = None
        if samples is not None:
            frame = av.AudioFrame.from_ndarray(
                samples.astype(np.float32)[None], format="flt", layout="mono"
            )
            frame.sample_rate = self.rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def resample(samples: np.ndarray, rate: int, target: int = OUTPUT_RATE) -> np.ndarray:
    """``samples`` (float32 mono, one whole clip) at ``target`` Hz."""
    if rate == target or not len(samples):
        return samples.astype(np.float32, copy=False)
    resampler = Resampler(rate, target)
    return np.concatenate([resampler(samples), resampler(None)])


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_header(rate: int = OUTPUT_RATE) -> bytes:
    """A mono 16-bit WAV header whose sizes are left open (0xFFFFFFFF), for streaming."""
    open_size = 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", open_size)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", open_size))
    )


def encode_stream(chunks: Iterable[np.ndarray], fmt: str) -> Iterator[bytes]:
    """Bytes of ``fmt`` for 24 kHz float32 ``chunks``, yielded as each chunk is encoded."""
    if fmt in ("wav", "pcm"):
        if fmt == "wav":
            yield wav_header()
        for chunk in chunks:
            yield pcm16(chunk)
        return
    yield from _encode_with_ffmpeg(chunks, fmt)


def _encode_with_ffmpeg(chunks: Iterable[np.ndarray], fmt: str) -> Iterator[bytes]:
    muxer, codec, sample_format = _CONTAINERS[fmt]
    buffer = io.BytesIO()
    container = av.open(buffer, mode="w", format=muxer)
    stream = container.add_stream(codec, rate=OUTPUT_RATE if fmt != "opus" else 48_000)
    stream.layout = "mono"
    resampler = av.AudioResampler(format=sample_format, layout="mono", rate=stream.rate)
    sent = 0
    try:
        for chunk in chunks:
            _mux(container, stream, resampler, chunk)
            data = buffer.getvalue()
            yield data[sent:]
            sent = len(data)
        _mux(container, stream, resampler, None)
        container.mux(stream.encode(None))
    finally:
        container.close()
    yield buffer.getvalue()[sent:]


def _mux(container, stream, resampler, chunk: np.ndarray | None) -> None:
    if chunk is None:
        frames = resampler.resample(None)
    else:
        frame = av.AudioFrame.from_ndarray(
            chunk.astype(np.float32)[None], format="flt", layout="mono"
        )
        frame.sample_rate = OUTPUT_RATE
        frames = resampler.resample(frame)
    for frame in frames:
        frame.pts = None
        container.mux(stream.encode(frame))


def encode(samples: np.ndarray, fmt: str) -> bytes:
    """One whole clip (24 kHz float32) in ``fmt``."""
    return b"".join(encode_stream([samples], fmt))
