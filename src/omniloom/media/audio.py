"""Decode untrusted audio bytes into 16 kHz mono float32 samples, and encode speech for output.

Any container and codec FFmpeg (PyAV) reads is accepted — wav, mp3, ogg/opus, flac, webm, m4a
— and resampled to 16 kHz mono as it is decoded. Decoding streams: samples come out in chunks
of at most ``chunk_seconds``, so a long file never sits in memory whole, and the duration limit
is enforced from the container's header before decoding and again while decoding (a header may
lie). Bytes over the limit, empty input, bytes no decoder reads and files without an audio
stream are each refused with a message that says which.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from omniloom.config import Limits
from omniloom.errors import MediaError

SAMPLE_RATE = 16_000
INPUT_FORMATS = ("wav", "mp3", "ogg", "opus", "flac", "webm", "m4a", "mp4", "aac", "mpeg")


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32 in [-1, 1], mono, 16 kHz
    source_format: str
    content_hash: str  # sha256 of the samples

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def check_size(data: bytes, limits: Limits, param: str) -> None:
    """Refuse empty audio and audio over the byte limit before anything reads it."""
    if not data:
        raise MediaError("The audio is empty (0 bytes).", param=param)
    if len(data) > limits.max_audio_bytes:
        raise MediaError(
            f"The audio is {len(data)} bytes; the limit is {limits.max_audio_bytes} bytes.",
            param=param,
        )


def _too_long(seconds: float, limits: Limits, param: str) -> MediaError:
    return MediaError(
        f"The audio is longer than the limit of {limits.max_audio_seconds:g} seconds "
        f"(at least {seconds:.1f} s).",
        param=param,
    )


def _open(data: bytes, param: str):
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise MediaError(
            "The audio could not be decoded: its bytes are not a supported audio file "
            f"({', '.join(INPUT_FORMATS)}).",
            param=param,
        ) from exc
    if not container.streams.audio:
        container.close()
        raise MediaError("The file has no audio stream.", param=param)
    return container


def probe(data: bytes, limits: Limits, param: str = "file") -> str:
    """The container format of ``data``, after the checks that need no decoding: size, an
    audio stream, and the duration its header declares."""
    check_size(data, limits, param)
    container = _open(data, param)
    try:
        if container.duration and container.duration / 1e6 > limits.max_audio_seconds:
            raise _too_long(container.duration / 1e6, limits, param)
        return container.format.name
    finally:
        container.close()


def stream_chunks(
    data: bytes, limits: Limits, param: str = "file", chunk_seconds: float = 30.0
) -> Iterator[np.ndarray]:
    """16 kHz mono float32 chunks of ``data``, at most ``chunk_seconds`` each (the last one
    shorter). Raises ``MediaError`` for bytes that are not audio or that run over the limits."""
    probe(data, limits, param)
    container = _open(data, param)
    try:
        yield from decoded_chunks(
            container, container.streams.audio[0], limits, param, chunk_seconds
        )
    finally:
        container.close()


def decoded_chunks(container, stream, limits: Limits, param: str, chunk_seconds: float):
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunk_size = int(chunk_seconds * SAMPLE_RATE)
    pending: list[np.ndarray] = []
    held = total = 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1)
                pending.append(samples)
                held, total = held + len(samples), total + len(samples)
                if total > limits.max_audio_seconds * SAMPLE_RATE:
                    raise _too_long(total / SAMPLE_RATE, limits, param)
                while held >= chunk_size:
                    joined = np.concatenate(pending)
                    yield joined[:chunk_size]
                    pending, held = [joined[chunk_size:]], held - chunk_size
        for out in resampler.resample(None):
            pending.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        raise MediaError(f"The audio could not be decoded: {exc}.", param=param) from exc
    rest = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    if len(rest) or not total:
        yield rest


class Counted:
    """Chunks passed through unchanged, counting the seconds that went by."""

    def __init__(self, chunks: Iterator[np.ndarray]):
        self._chunks = chunks
        self.samples = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for chunk in self._chunks:
            self.samples += len(chunk)
            yield chunk

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE


def decode_audio(data: bytes, limits: Limits, param: str = "file") -> DecodedAudio:
    """The whole of ``data`` as one array (for inputs within the limits, such as chat parts)."""
    container_format = probe(data, limits, param)
    samples = np.concatenate(list(stream_chunks(data, limits, param)))
    digest = hashlib.sha256(samples.tobytes()).hexdigest()
    return DecodedAudio(samples.astype(np.float32, copy=False), container_format, digest)
