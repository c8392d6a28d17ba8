"""Video as timed frames: each sampled frame is one image item of the model's own image
processor, marked as video, after its timestamp written as text.

A video part becomes ``Video, 6.0 s, 3 frames:`` then, per frame, ``At 2.0 s:`` and the frame's
span — so the model can answer "when", and ``video_tokens`` in usage is the sum of the frames'
spans. The frames go through the same encoder as images (batched with them, and cached by
frame content); a family with a video path of its own gives a processor of its own instead.

Where the sound track was asked for, each stretch of speech goes in as
``[Heard 1.0–2.5 s: "…"]`` among the frames, by the time it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omniloom.config import ImageSettings
from omniloom.media.video import SampledFrame, VideoInfo
from omniloom.processing.prompt import MediaPart, TextPart


@dataclass(frozen=True)
class VideoFrameItem:
    """An image item standing for one video frame: the same span, counted as video."""

    frame: Any  # the image processor's item
    timestamp: float
    modality: str = "video"

    @property
    def content_hash(self) -> str:
        return self.frame.content_hash

    def cache_key(self) -> str:
        return self.frame.cache_key()

    def token_ids(self) -> list[int]:
        return self.frame.token_ids()

    def num_placeholders(self) -> int:
        return self.frame.num_placeholders()

    def __getattr__(self, name: str):
        """Everything else (pixels, tiles, grid) is the frame's, for the image encoder."""
        if name == "frame":
            raise AttributeError(name)
        return getattr(self.frame, name)


def timestamp_text(seconds: float) -> str:
    return f"At {seconds:.1f} s: "


def heard_text(segment) -> str:
    """One stretch of speech from the sound track, with its times."""
    return f'[Heard {segment.start:.1f}–{segment.end:.1f} s: "{segment.text.strip()}"]\n'


NO_SPEECH = "[The sound track has no speech.]\n"


def speech_before(segments: list, seconds: float) -> list[TextPart]:
    """The speech segments that start before ``seconds``, taken off the front of the list."""
    parts = []
    while segments and segments[0].start < seconds:
        parts.append(TextPart(heard_text(segments.pop(0))))
    return parts


def speech_parts(heard: list | None) -> list[TextPart]:
    """All of the sound track's speech, in order (nothing where it was not asked for)."""
    if heard is None:
        return []
    return [TextPart(heard_text(s)) for s in heard] or [TextPart(NO_SPEECH)]


def video_header(info: VideoInfo, frames: int) -> str:
    return f"Video, {info.seconds:.1f} s, {frames} frame{'s' * (frames != 1)}:\n"


@dataclass(frozen=True)
class FramesAsImages:
    """The video processor of a model that sees images: frames through ``image_processor``."""

    image_processor: Any

    def parts(
        self,
        info: VideoInfo,
        frames: list[SampledFrame],
        video_hash: str,
        detail: str,
        settings: ImageSettings,
        heard: list | None = None,
    ) -> list:
        """The header, then each frame after its time, with the speech heard by then."""
        out: list = [TextPart(video_header(info, len(frames)))]
        pending = list(heard or [])
        for frame in frames:
            item = self.image_processor.prepare(frame.decoded(video_hash), detail, settings)
            out += speech_before(pending, frame.timestamp + 1e-6)
            out += [
                TextPart(timestamp_text(frame.timestamp)),
                MediaPart(VideoFrameItem(item, frame.timestamp)),
            ]
        out += speech_before(pending, float("inf"))
        if heard is not None and not heard:
            out.append(TextPart(NO_SPEECH))
        out.append(TextPart("\n"))
        return out
