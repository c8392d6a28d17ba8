"""Video as timed frames: each sampled frame is one image item of the model's own image
processor, marked as video, after its timestamp written as text.

A video part becomes ``Video, 6.0 s, 3 frames:`` then, per frame, ``At 2.0 s:`` and the frame's
span — so the model can answer "when", and ``video_tokens`` in usage is the sum of the frames'
spans. The frames go through the same encoder as images (batched with them, and cached by
frame content); a family with a video path of its own gives a processor of its own instead.
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
    ) -> list:
        out: list = [TextPart(video_header(info, len(frames)))]
        for frame in frames:
            item = self.image_processor.prepare(frame.decoded(video_hash), detail, settings)
            out += [
                TextPart(timestamp_text(frame.timestamp)),
                MediaPart(VideoFrameItem(item, frame.timestamp)),
            ]
        out.append(TextPart("\n"))
        return out
