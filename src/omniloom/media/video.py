"""Sample frames from untrusted video with bounded memory, by one of four strategies.

PyAV (FFmpeg) reads the container as a stream: nothing but the kept frames (scaled down to
``max_side``) and a tiny greyscale probe of the current one stays in memory, whatever the
video's length or resolution. Limits on bytes, duration, resolution and frames are checked
from the container's header before any frame is decoded, and the duration again while decoding
(a header may lie).

Strategies (``VideoSettings.strategy``, in ``config.py``):

- ``uniform``: ``fps`` frames a second, at most ``max_frames`` (spread over the whole video when
  it is longer). Each target time is reached by seeking to the keyframe before it and decoding
  forward where a keyframe lies between (the container's index says where; without one, when
  the target is more than two seconds ahead), so the work follows the frames kept, not the
  frames in the file.
- ``keyframes``: the container's keyframes (from its index, or packet flags; nothing decoded), spread
  to ``max_frames``; each costs one keyframe decode.
- ``scene``: the first frame and each frame where the picture changes: the mean absolute
  difference of consecutive frames' 32×18 probes (brightness and colour) above
  ``scene_threshold``; when
  there are more cuts than ``max_frames``, the strongest are kept. Every frame is decoded
  (a cut can fall anywhere), so this one's time follows the file's length.
- ``adaptive``: ``max_frames`` frames placed where the picture changes most: probes taken
  ``probe_fps`` times a second, their differences (plus a floor, so still stretches get some)
  summed along the video, the frames at equal steps of that sum, then the strongest changes
  not yet picked until the budget is used.

Every frame carries its timestamp (seconds from the start of the stream).

``plan`` tells, from the container's metadata alone, which frames a request would keep: the
same times and sizes ``sample`` gives for ``uniform`` (at a constant frame rate) and
``keyframes``, and for ``scene`` and ``adaptive`` (whose picks need the pictures) an upper
bound: ``max_frames`` frames stamped at the video's end. ``sound_chunks`` streams the sound
track as 16 kHz samples for speech recognition, and ``thumbnail`` gives a kept frame as a small
JPEG data URL (what ``/tokenize?previews=true`` shows).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import heapq
import io
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import av
import numpy as np
from PIL import Image

from omniloom.config import Limits, VideoSettings
from omniloom.errors import MediaError
from omniloom.media.audio import decoded_chunks
from omniloom.media.image import DecodedImage

STRATEGIES = ("uniform", "keyframes", "scene", "adaptive")
_PROBE_SIZE = (32, 18)
_SEEK_GAP_S = 2.0  # a target further ahead than this is reached by seeking
_FLOOR = 0.02  # adaptive: the change a still stretch counts as


@dataclass(frozen=True)
class VideoInfo:
    seconds: float
    fps: float
    frames: int  # as the header says (estimated from duration × rate where it says nothing)
    width: int
    height: int
    has_audio: bool
    start: float = 0.0  # the first frame's time


@dataclass(frozen=True)
class SampledFrame:
    image: Image.Image
    timestamp: float

    def decoded(self, video_hash: str) -> DecodedImage:
        """The frame as an image item's input, hashed with its video and time."""
        digest = hashlib.sha256(f"{video_hash}@{self.timestamp:.3f}".encode()).hexdigest()
        return DecodedImage(self.image, "video-frame", digest)


@dataclass(frozen=True)
class VideoPlan:
    """What sampling would keep, known before decoding: the frames (blank stand-ins of the
    kept frames' size, at their times) and whether that is exact or an upper bound."""

    info: VideoInfo
    frames: list[SampledFrame]
    exact: bool


def open_container(source: bytes | Path, param: str):
    try:
        return av.open(str(source) if isinstance(source, Path) else io.BytesIO(source), mode="r")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise MediaError(f"The video could not be read: {exc}", param=param) from exc


def _video_stream(container, param: str):
    if not container.streams.video:
        raise MediaError("The file has no video stream.", param=param)
    return container.streams.video[0]


def probe(container, param: str) -> VideoInfo:
    stream = _video_stream(container, param)
    rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    if stream.duration is not None and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        raise MediaError("The video does not say how long it is.", param=param)
    frames = stream.frames or round(seconds * rate)
    width, height = stream.codec_context.width, stream.codec_context.height
    start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    has_audio = bool(container.streams.audio)
    return VideoInfo(seconds, rate, frames, width, height, has_audio, start)


def check_limits(info: VideoInfo, limits: Limits, param: str) -> None:
    if info.seconds > limits.max_video_seconds:
        raise MediaError(
            f"The video is {info.seconds:.1f} s long; the limit is {limits.max_video_seconds:g} s.",
            param=param,
        )
    if info.width * info.height > limits.max_video_pixels:
        raise MediaError(
            f"The video is {info.width}×{info.height}; the limit is "
            f"{limits.max_video_pixels} pixels a frame.",
            param=param,
        )
    if info.frames > limits.max_video_frames:
        raise MediaError(
            f"The video has {info.frames} frames; the limit is {limits.max_video_frames}.",
            param=param,
        )


def uniform_times(seconds: float, fps: float, max_frames: int) -> list[float]:
    """``fps`` a second from 0, or ``max_frames`` spread evenly when that is more."""
    count = max(1, int(np.ceil(seconds * fps - 1e-9)))
    if count <= max_frames:
        return [k / fps for k in range(count)]
    return [k * seconds / max_frames for k in range(max_frames)]


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled down to fit ``max_side``."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _scaled(frame, max_side: int) -> Image.Image:
    width, height = scaled_size(frame.width, frame.height, max_side)
    return frame.to_image(width=width, height=height)


def _probe(frame) -> np.ndarray:
    """The frame as 18×32 block means of each of its planes (brightness and both colour
    differences, so a cut between colours of equal brightness shows), read from the planes of
    a YUV frame on a sparse grid of pixels, which is far cheaper than scaling the picture."""
    if not frame.format.name.startswith("yuv") or len(frame.planes) < 3:
        small = frame.reformat(width=_PROBE_SIZE[0], height=_PROBE_SIZE[1], format="rgb24")
        return small.to_ndarray().astype(np.float32).transpose(2, 0, 1) / 255.0
    return np.stack([_block_means(plane) for plane in frame.planes[:3]])


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    """How far two probes differ: the mean absolute difference of the plane that changed most."""
    return float(np.abs(a - b).mean(axis=(1, 2)).max())


def _block_means(plane) -> np.ndarray:
    rows, cols = _PROBE_SIZE[1], _PROBE_SIZE[0]
    pixels = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    step = max(1, min(plane.height // rows, plane.width // cols) // 4)
    sparse = pixels[::step, : plane.width : step]
    h, w = sparse.shape[0] // rows * rows, sparse.shape[1] // cols * cols
    blocks = sparse[:h, :w].reshape(rows, h // rows, cols, w // cols)
    return blocks.mean(axis=(1, 3), dtype=np.float32) / 255.0


class _Decoder:
    """Frames of one video stream, in order, with the duration enforced as they come."""

    def __init__(self, container, info: VideoInfo, limits: Limits, param: str):
        self.container, self.info, self.limits, self.param = container, info, limits, param
        self.stream = _video_stream(container, param)
        self.stream.thread_type = "AUTO"

    def frames(self, start: float = 0.0) -> Iterator:
        if start > 0:
            offset = int(start / self.stream.time_base) if self.stream.time_base else 0
            self.container.seek(offset, stream=self.stream, backward=True, any_frame=False)
        try:
            for frame in self.container.decode(self.stream):
                if frame.time is None:
                    continue
                if frame.time > self.limits.max_video_seconds:
                    raise MediaError(
                        "The video is longer than the limit of "
                        f"{self.limits.max_video_seconds:g} s.",
                        param=self.param,
                    )
                yield frame
        except av.FFmpegError as exc:
            raise MediaError(f"The video could not be decoded: {exc}", param=self.param) from exc

    def worth_seeking(self, position: float, target: float) -> bool:
        """Whether to seek to ``target`` rather than decode on from ``position``: where the
        container has an index, when a keyframe lies between them (decoding from it is shorter
        than decoding on); without one, when the target is more than a few seconds ahead."""
        keys = self.keyframes
        if not keys:
            return target - position > _SEEK_GAP_S
        before = bisect.bisect_right(keys, target) - 1
        return before >= 0 and keys[before] > position + 1e-6

    @cached_property
    def keyframes(self) -> list[float]:
        return indexed_keyframes(self.stream)

    def at(self, times: list[float], max_side: int) -> list[SampledFrame]:
        """The first frame at or after each time, seeking where that is shorter."""
        out: list[SampledFrame] = []
        half_frame = 0.5 / self.info.fps
        pending = iter(times)
        target = next(pending, None)
        stream = self.frames()
        position, sought = 0.0, None
        while target is not None:
            if sought != target and self.worth_seeking(position, target):
                stream, sought = self.frames(target), target  # once: it lands on a keyframe
            frame = next(stream, None)
            if frame is None:
                break
            position = frame.time
            while target is not None and frame.time >= target - half_frame:
                out.append(SampledFrame(_scaled(frame, max_side), frame.time))
                target = next(pending, None)
        return out


def indexed_keyframes(stream) -> list[float]:
    """Keyframe times from the container's index (empty where it has none). The index holds
    decode times, which run ahead of presentation by the reorder delay: the first entry's
    distance from the stream's start is added back."""
    entries = stream.index_entries
    if not len(entries) or not stream.time_base:
        return []
    shift = (stream.start_time or 0) - entries[0].timestamp
    return sorted(float((e.timestamp + shift) * stream.time_base) for e in entries if e.is_keyframe)


def keyframe_times(container, param: str) -> list[float]:
    """Keyframe timestamps: from the container's index, else from packet flags (nothing is
    decoded either way)."""
    stream = _video_stream(container, param)
    indexed = indexed_keyframes(stream)
    if indexed:
        return indexed
    times = [
        float(packet.pts * stream.time_base)
        for packet in container.demux(stream)
        if packet.is_keyframe and packet.pts is not None
    ]
    container.seek(0)
    return sorted(times)


def _spread(times: list[float], count: int) -> list[float]:
    if len(times) <= count:
        return times
    picks = np.linspace(0, len(times) - 1, count).round().astype(int)
    return [times[i] for i in picks]


def change_scores(decoder: _Decoder, probe_fps: float) -> list[tuple[float, float]]:
    """(time, difference from the previous probe) every 1/``probe_fps`` s; the first is 1."""
    scores, previous, next_time = [], None, 0.0
    for frame in decoder.frames():
        if frame.time + 1e-6 < next_time:
            continue
        current = _probe(frame)
        diff = 1.0 if previous is None else _difference(current, previous)
        scores.append((frame.time, diff))
        previous, next_time = current, frame.time + 1.0 / probe_fps
    return scores


def scene_frames(decoder: _Decoder, sampling: VideoSettings) -> list[SampledFrame]:
    """The first frame and the strongest cuts, decoded in one pass (kept: ``max_frames``)."""
    kept: list[tuple[float, float, int, Image.Image]] = []  # heap of (score, -time, n, image)
    previous, count = None, 0
    for frame in decoder.frames():
        current = _probe(frame)
        diff = 2.0 if previous is None else _difference(current, previous)
        previous = current
        if diff < sampling.scene_threshold:
            continue
        entry = (diff, -frame.time, count, _scaled(frame, sampling.max_side))
        count += 1
        if len(kept) < sampling.max_frames:
            heapq.heappush(kept, entry)
        else:
            heapq.heappushpop(kept, entry)
    return sorted((SampledFrame(e[3], -e[1]) for e in kept), key=lambda f: f.timestamp)


def adaptive_times(scores: list[tuple[float, float]], count: int) -> list[float]:
    """``count`` times at equal steps of the cumulative change (each probe at least a floor)."""
    if not scores:
        return []
    times = np.array([t for t, _ in scores])
    mass = np.cumsum([max(d, _FLOOR) for _, d in scores[1:]] + [0.0])
    mass = np.concatenate([[0.0], mass[:-1]])
    wanted = min(count, len(times))
    steps = np.linspace(0, mass[-1], wanted, endpoint=False)
    picks = set(np.minimum(np.searchsorted(mass, steps), len(times) - 1).tolist())
    by_change = sorted(range(len(scores)), key=lambda i: -scores[i][1])
    picks |= set([i for i in by_change if i not in picks][: wanted - len(picks)])
    return [float(times[i]) for i in sorted(picks)]


def sample(
    source: bytes | Path, sampling: VideoSettings, limits: Limits, param: str = "video_url"
) -> tuple[VideoInfo, list[SampledFrame]]:
    """The video's header facts and its sampled frames (in time order)."""
    _check_strategy(sampling, param)
    with open_container(source, param) as container:
        info = probe(container, param)
        check_limits(info, limits, param)
        decoder = _Decoder(container, info, limits, param)
        if sampling.strategy == "scene":
            frames = scene_frames(decoder, sampling)
        else:
            times = planned_times(container, info, sampling, decoder, param)
            frames = decoder.at(times, sampling.max_side)
    if not frames:
        raise MediaError("No frame could be decoded from the video.", param=param)
    return info, frames


def plan(
    source: bytes | Path, sampling: VideoSettings, limits: Limits, param: str = "video_url"
) -> VideoPlan:
    """The frames ``sample`` would keep, from the header and index alone (nothing decoded)."""
    _check_strategy(sampling, param)
    with open_container(source, param) as container:
        info = probe(container, param)
        check_limits(info, limits, param)
        if sampling.strategy == "uniform":
            times = _frames_at(info, uniform_times(info.seconds, sampling.fps, sampling.max_frames))
        elif sampling.strategy == "keyframes":
            times = _spread(keyframe_times(container, param), sampling.max_frames)
        else:
            times = [info.start + info.seconds] * sampling.max_frames
    size = scaled_size(info.width, info.height, sampling.max_side)
    frames = [SampledFrame(Image.new("RGB", size), t) for t in times]
    exact = sampling.strategy in ("uniform", "keyframes") and not sampling.pooling
    return VideoPlan(info, frames, exact)


def _frames_at(info: VideoInfo, targets: list[float]) -> list[float]:
    """The time of the first frame at or after each target (within half a frame), on the
    constant frame grid the header gives; targets past the last frame find none."""
    times = []
    for target in targets:
        k = max(0, int(np.ceil((target - 0.5 / info.fps - info.start) * info.fps - 1e-6)))
        if k < info.frames:
            times.append(info.start + k / info.fps)
    return times


def sound_chunks(source: bytes | Path, limits: Limits, param: str) -> Iterator[np.ndarray]:
    """The sound track as 16 kHz mono float32 chunks (none where the video has no sound),
    held to the video's duration limit."""
    with open_container(source, param) as container:
        if not container.streams.audio:
            return
        bounds = replace(limits, max_audio_seconds=limits.max_video_seconds)
        yield from decoded_chunks(container, container.streams.audio[0], bounds, param, 30.0)


def _check_strategy(sampling: VideoSettings, param: str) -> None:
    if sampling.strategy not in STRATEGIES:
        raise MediaError(
            f"Unknown video strategy {sampling.strategy!r}; choose from {', '.join(STRATEGIES)}.",
            param=param,
        )


def planned_times(container, info, sampling: VideoSettings, decoder, param: str) -> list[float]:
    if sampling.strategy == "uniform":
        return uniform_times(info.seconds, sampling.fps, sampling.max_frames)
    if sampling.strategy == "keyframes":
        return _spread(keyframe_times(container, param), sampling.max_frames)
    scores = change_scores(decoder, sampling.probe_fps)
    container.seek(0)
    return adaptive_times(scores, sampling.max_frames)


def pooled(frames: list[SampledFrame], threshold: float) -> list[SampledFrame]:
    """The frames without those nearly identical to the one kept before them."""
    kept, previous = [], None
    for frame in frames:
        probe_ = np.asarray(frame.image.convert("L").resize(_PROBE_SIZE), np.float32) / 255.0
        if previous is None or float(np.abs(probe_ - previous).mean()) >= threshold:
            kept.append(frame)
            previous = probe_
    return kept


def thumbnail(image: Image.Image, max_side: int = 160) -> str:
    """The frame as a JPEG data URL, its longer side at most ``max_side`` pixels."""
    small = image.convert("RGB")
    small.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def video_hash(source: bytes | Path) -> str:
    """sha256 of the file's bytes (read in pieces for a local file)."""
    digest = hashlib.sha256()
    if isinstance(source, Path):
        with source.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    else:
        digest.update(source)
    return digest.hexdigest()
