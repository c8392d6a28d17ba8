"""Qwen2-VL's image preprocessing: native resolution, resized to a multiple of 28 pixels.

As ``transformers``' Qwen2-VL image processor (its PIL backend) does it: the image is resized
(bicubic) so that each side is a multiple of patch × merge (28) and the pixel count lies in
[``min_pixels``, ``max_pixels``], scaled to [0, 1], normalised with CLIP's mean and standard
deviation, and cut into 14×14 patches ordered by 2×2 merge block, each repeated over the
temporal patch of 2. Every 2×2 block becomes one ``<|image_pad|>`` token between
``<|vision_start|>`` and ``<|vision_end|>``, so the token count follows from the image's size
alone, before any pixel is decoded. ``detail: low`` caps the pixels at 256 tokens' worth.

Video is the family's own: the sampled frames, all resized alike within the video bounds
(``video_preprocessor_config.json``, else 128 to 768 merged tokens a frame pair), are stacked in
time and cut into patches of 2 frames × 14 × 14 (the last frame repeated to fill a pair), so
one ``<|video_pad|>`` stands for a 2×2 block of two frames. The span comes after a line that
gives the frames' timestamps as text (and the sound track's timed speech, where asked for); in the decoder the time axis of M-RoPE counts the frame
pairs (Qwen2.5-VL: scaled to seconds by ``tokens_per_second``). ``detail: low`` uses the
video minimum (128 tokens a pair); ``high`` the checkpoint's maximum.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from omniloom.errors import MediaError
from omniloom.media.image import DecodedImage
from omniloom.media.video import SampledFrame, VideoInfo
from omniloom.processing.pixels import CLIP_MEAN, CLIP_STD, normalised
from omniloom.processing.prompt import MediaPart, TextPart
from omniloom.processing.video_frames import speech_parts

LOW_DETAIL_TOKENS = 256
VIDEO_MIN_PIXELS = 128 * 28 * 28  # transformers' Qwen2-VL video processor's bounds
VIDEO_MAX_PIXELS = 768 * 28 * 28


@dataclass(frozen=True)
class Qwen2VLImageSettings:
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD

    @classmethod
    def from_directory(
        cls, directory: Path, name: str = "preprocessor_config.json", base=None
    ) -> Qwen2VLImageSettings:
        """The checkpoint's ``name`` config (``base``'s values, else the defaults, where it
        says nothing)."""
        path = directory / name
        cfg = json.loads(path.read_text()) if path.exists() else {}
        size = cfg.get("size") or {}
        base = base or cls()
        return cls(
            min_pixels=cfg.get("min_pixels") or size.get("shortest_edge") or base.min_pixels,
            max_pixels=cfg.get("max_pixels") or size.get("longest_edge") or base.max_pixels,
            patch_size=cfg.get("patch_size", base.patch_size),
            merge_size=cfg.get("merge_size", base.merge_size),
            temporal_patch_size=cfg.get("temporal_patch_size", base.temporal_patch_size),
            image_mean=tuple(cfg.get("image_mean", base.image_mean)),
            image_std=tuple(cfg.get("image_std", base.image_std)),
        )

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def for_detail(self, detail: str | None) -> Qwen2VLImageSettings:
        if detail != "low":
            return self
        low = LOW_DETAIL_TOKENS * self.factor**2
        return replace(self, max_pixels=min(self.max_pixels, low), min_pixels=self.min_pixels)

    @classmethod
    def video_from_directory(cls, directory: Path) -> Qwen2VLImageSettings:
        """Video bounds: ``video_preprocessor_config.json``, else the image settings' patching
        with the video processor's default pixel bounds."""
        images = cls.from_directory(directory)
        base = replace(images, min_pixels=VIDEO_MIN_PIXELS, max_pixels=VIDEO_MAX_PIXELS)
        return cls.from_directory(directory, "video_preprocessor_config.json", base)

    def for_video_detail(self, detail: str | None) -> Qwen2VLImageSettings:
        """``low``: the video minimum is also the maximum."""
        return replace(self, max_pixels=self.min_pixels) if detail == "low" else self


def smart_resize(height: int, width: int, s: Qwen2VLImageSettings) -> tuple[int, int]:
    """The resized (height, width): multiples of ``factor``, pixels within the bounds."""
    if max(height, width) / min(height, width) > 200:
        raise MediaError(
            f"The image is {width}x{height}; this model takes aspect ratios up to 200:1.",
            param="image_url",
        )
    factor = s.factor
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > s.max_pixels:
        beta = math.sqrt((height * width) / s.max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < s.min_pixels:
        beta = math.sqrt(s.min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class Qwen2VLTokens:
    """The checkpoint's ids for an image's span."""

    vision_start: int
    vision_end: int
    image_pad: int
    video_pad: int = 151656


@dataclass(frozen=True)
class Qwen2VLImage:
    decoded: DecodedImage
    settings: Qwen2VLImageSettings
    tokens: Qwen2VLTokens
    size: tuple[int, int]  # resized (height, width)
    modality: str = "image"
    seconds_per_grid: float = 0.0  # an image has no time axis

    @property
    def content_hash(self) -> str:
        return self.decoded.content_hash

    @property
    def grid(self) -> tuple[int, int, int]:
        """Patches along (time, height, width) before merging."""
        p = self.settings.patch_size
        return 1, self.size[0] // p, self.size[1] // p

    def num_placeholders(self) -> int:
        t, h, w = self.grid
        return t * h * w // self.settings.merge_size**2

    def cache_key(self) -> str:
        s = self.settings
        return f"qwen2vl/{self.size[0]}x{self.size[1]}/{s.image_mean}/{s.image_std}"

    def token_ids(self) -> list[int]:
        t = self.tokens
        return [t.vision_start, *[t.image_pad] * self.num_placeholders(), t.vision_end]

    def patches(self) -> torch.Tensor:
        """(patches, C · temporal · patch²) float32, in merge-block order."""
        pixels = _resized_pixels(self.decoded, self.size, self.settings)[None]
        return _patchify(pixels.repeat(self.settings.temporal_patch_size, axis=0), self.settings)


def _resized_pixels(
    decoded: DecodedImage, size: tuple[int, int], s: Qwen2VLImageSettings
) -> np.ndarray:
    """(C, height, width) normalised float32 pixels at ``size`` (bicubic)."""
    height, width = size
    resized = decoded.image.resize((width, height), Image.Resampling.BICUBIC)
    return normalised(resized, s.image_mean, s.image_std)


def _patchify(frames: np.ndarray, s: Qwen2VLImageSettings) -> torch.Tensor:
    """(frames, C, H, W), frames a multiple of the temporal patch → (patches, C · temporal ·
    patch²), ordered by frame pair, then merge block, as ``transformers`` lays them out."""
    count, channels, height, width = frames.shape
    p, m, tp = s.patch_size, s.merge_size, s.temporal_patch_size
    gt, gh, gw = count // tp, height // p, width // p
    blocks = frames.reshape(gt, tp, channels, gh // m, m, p, gw // m, m, p)
    blocks = blocks.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return torch.from_numpy(np.ascontiguousarray(blocks).reshape(gt * gh * gw, -1))


@dataclass(frozen=True)
class Qwen2VLVideo:
    """A video's sampled frames as one span of ``<|video_pad|>`` tokens."""

    frames: tuple[DecodedImage, ...]
    settings: Qwen2VLImageSettings
    tokens: Qwen2VLTokens
    size: tuple[int, int]  # every frame's resized (height, width)
    seconds_per_grid: float  # time between frame pairs, for Qwen2.5-VL's time positions
    modality: str = "video"

    @property
    def content_hash(self) -> str:
        joined = "/".join(frame.content_hash for frame in self.frames)
        return hashlib.sha256(joined.encode()).hexdigest()

    @property
    def grid(self) -> tuple[int, int, int]:
        """Frame pairs, patch rows and patch columns."""
        p = self.settings.patch_size
        pairs = -(-len(self.frames) // self.settings.temporal_patch_size)
        return pairs, self.size[0] // p, self.size[1] // p

    def num_placeholders(self) -> int:
        t, h, w = self.grid
        return t * h * w // self.settings.merge_size**2

    def cache_key(self) -> str:
        s = self.settings
        return f"qwen2vl-video/{len(self.frames)}@{self.size[0]}x{self.size[1]}/{s.image_mean}"

    def token_ids(self) -> list[int]:
        t = self.tokens
        return [t.vision_start, *[t.video_pad] * self.num_placeholders(), t.vision_end]

    def patches(self) -> torch.Tensor:
        frames = [_resized_pixels(frame, self.size, self.settings) for frame in self.frames]
        frames += frames[-1:] * (-len(frames) % self.settings.temporal_patch_size)
        return _patchify(np.stack(frames), self.settings)


@dataclass(frozen=True)
class Qwen2VLImageProcessor:
    settings: Qwen2VLImageSettings
    tokens: Qwen2VLTokens

    def prepare(self, decoded: DecodedImage, detail: str | None, _image_settings=None):
        settings = self.settings.for_detail(detail)
        size = smart_resize(decoded.height, decoded.width, settings)
        return Qwen2VLImage(decoded, settings, self.tokens, size)


def frame_times_text(info: VideoInfo, frames: list[SampledFrame]) -> str:
    stamps = ", ".join(f"{frame.timestamp:.1f}" for frame in frames)
    count = len(frames)
    return f"Video, {info.seconds:.1f} s, {count} frame{'s' * (count != 1)} at {stamps} s:\n"


def seconds_per_grid(info: VideoInfo, frames: list[SampledFrame], temporal: int) -> float:
    """The time a frame pair spans: the mean gap between the sampled frames, times the pair."""
    if len(frames) < 2:
        return temporal / info.fps
    return temporal * (frames[-1].timestamp - frames[0].timestamp) / (len(frames) - 1)


@dataclass(frozen=True)
class Qwen2VLVideoProcessor:
    """Video parts for the family: the frames' timestamps as text, then one video span."""

    settings: Qwen2VLImageSettings
    tokens: Qwen2VLTokens

    def prepare(
        self, info: VideoInfo, frames: list[SampledFrame], video_hash: str, detail: str | None
    ) -> Qwen2VLVideo:
        settings = self.settings.for_video_detail(detail)
        first = frames[0].image
        size = smart_resize(first.height, first.width, settings)
        decoded = tuple(frame.decoded(video_hash) for frame in frames)
        spacing = seconds_per_grid(info, frames, settings.temporal_patch_size)
        return Qwen2VLVideo(decoded, settings, self.tokens, size, spacing)

    def parts(
        self,
        info: VideoInfo,
        frames: list[SampledFrame],
        video_hash: str,
        detail: str | None,
        _image_settings=None,
        heard: list | None = None,
    ) -> list:
        """The frames' times, the timed speech where asked for, then the video's span."""
        video = self.prepare(info, frames, video_hash, detail)
        header = TextPart(frame_times_text(info, frames))
        return [header, *speech_parts(heard), MediaPart(video), TextPart("\n")]
