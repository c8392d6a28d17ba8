"""Per-video token counts and input cost across omniloom's and hosted models.

Used by ``omniloom tokens VIDEO``. omniloom's count is the served model's own: the frames its
video settings keep, planned from the container's metadata (exact for ``uniform`` and
``keyframes``, an upper bound otherwise), each costed as that model's processor costs it. The
hosted rows follow each provider's published rule:

- Gemini 2.5: 263 tokens a second of video at the default media resolution (one frame a
  second), and 32 a second of sound where the file has a sound track.
- Qwen2.5-VL (hosted): its video processor at 2 frames a second (at least 4, pairs of frames,
  at most 768), each frame within 128–768 merged tokens and an even share of a 90%-of-128k
  budget, one ``<|video_pad|>`` per 2×2 block of a frame pair.
- GPT-4o, GPT-4.1, GPT-5 and Claude take no video file: the rows cost the same frames sent as
  images (OpenAI at low detail; Claude at the video's size).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from omniloom.config import Settings
from omniloom.media import video
from omniloom.processing import provider_tokens as pt
from omniloom.processing.costs import CostRow, load_prices
from omniloom.processing.prompt import MediaPart

GEMINI_VIDEO_PER_SECOND = 263
GEMINI_SOUND_PER_SECOND = 32
OPENAI_LOW_DETAIL = {"gpt-4o": 85, "gpt-4.1": 85, "gpt-5": 70}
QWEN_VIDEO_FPS = 2.0
QWEN_VIDEO_MIN_PIXELS = 128 * 28 * 28
QWEN_VIDEO_MAX_PIXELS = 768 * 28 * 28
QWEN_VIDEO_BUDGET = int(128_000 * 28 * 28 * 0.9)


def gemini_video(info: video.VideoInfo) -> pt.TokenCount:
    seconds = math.ceil(info.seconds)
    sound = GEMINI_SOUND_PER_SECOND * seconds if info.has_audio else 0
    how = f"{GEMINI_VIDEO_PER_SECOND}/s × {seconds} s" + (" + 32/s sound" if sound else "")
    return pt.TokenCount(GEMINI_VIDEO_PER_SECOND * seconds + sound, how)


def qwen_hosted_video(info: video.VideoInfo) -> pt.TokenCount:
    """Qwen2.5-VL's video processor with its published defaults (qwen-vl-utils)."""
    wanted = min(max(info.seconds * QWEN_VIDEO_FPS, 4), 768, info.frames)
    frames = max(2, math.floor(wanted / 2) * 2)
    per_frame = max(
        min(QWEN_VIDEO_MAX_PIXELS, QWEN_VIDEO_BUDGET * 2 // frames),
        int(QWEN_VIDEO_MIN_PIXELS * 1.05),
    )
    _, gh, gw = pt.qwen2_vl_grid(
        info.width, info.height, min_pixels=QWEN_VIDEO_MIN_PIXELS, max_pixels=per_frame
    )
    tokens = frames // 2 * gh * gw // 4
    return pt.TokenCount(tokens, f"{frames} frames at 2 fps, grid [{frames // 2}, {gh}, {gw}]")


def hosted_rows(info: video.VideoInfo, frames: int) -> list[tuple[str, pt.TokenCount]]:
    """(model, count) for the hosted models, ``frames`` being the frames sent as images."""
    rows = [(m, gemini_video(info)) for m in ("gemini-2.5-pro", "gemini-2.5-flash")]
    rows.append(("qwen2.5-vl-72b", qwen_hosted_video(info)))
    for model, per_image in OPENAI_LOW_DETAIL.items():
        how = f"no video input: {frames} frames as low-detail images × {per_image}"
        rows.append((model, pt.TokenCount(frames * per_image, how)))
    claude = pt.claude(info.width, info.height)
    how = f"no video input: {frames} frames as images × {claude.tokens} ({claude.detail})"
    rows.append(("claude-sonnet-4.5", pt.TokenCount(frames * claude.tokens, how)))
    return rows


def processor_tokens(processor, settings: Settings) -> Callable[[video.VideoPlan], int]:
    """A counter of the media tokens in the planned frames' spans, as a model's video
    ``processor`` lays them out."""

    def count(planned: video.VideoPlan) -> int:
        detail = settings.video.detail
        parts = processor.parts(planned.info, planned.frames, "plan", detail, settings.image)
        return sum(len(p.item.token_ids()) for p in parts if isinstance(p, MediaPart))

    return count


def video_cost_table(
    path: Path, settings: Settings, served: list[tuple[str, Callable[[video.VideoPlan], int]]]
) -> list[CostRow]:
    """Rows for the video at ``path``: ``served`` (name, counter of a plan's tokens) first,
    then the hosted models."""
    planned = video.plan(path, settings.video, settings.limits, str(path))
    prices = load_prices()["models"]
    frames, strategy = len(planned.frames), settings.video.strategy
    bound = "" if planned.exact else ", at most"
    rows = []
    for name, counter in served:
        tokens = counter(planned)
        how = f"{frames} frames ({strategy}{bound}), {settings.video.detail} detail"
        rows.append(CostRow(name, tokens, how, prices.get(name, {}).get("price")))
    for model, count in hosted_rows(planned.info, frames):
        rows.append(CostRow(model, count.tokens, count.detail, prices.get(model, {}).get("price")))
    return rows
