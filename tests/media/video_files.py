"""Videos for tests, made with PyAV: scenes of solid colour with a moving square, cut hard from
one to the next, optionally with a line of text from a given second and a sound track (a tone,
or given 16 kHz samples such as speech)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from omniloom.media.video_out import write_mp4


@dataclass(frozen=True)
class Scene:
    colour: tuple[int, int, int]
    seconds: float
    moving: bool = True


def make_video(
    scenes: list[Scene],
    fps: int = 10,
    size: tuple[int, int] = (160, 96),
    gop: int = 10,
    text: tuple[str, float] | None = None,
    audio: bool = False,
    codec: str = "libx264",
    sound: np.ndarray | None = None,
) -> bytes:
    """An MP4 of ``scenes`` in order; ``text`` = (words, from which second); ``audio``: a
    tone track, or ``sound`` (16 kHz mono samples from the start) as the track."""
    counts = [round(scene.seconds * fps) for scene in scenes]
    frames = [
        _picture(scene, k, size, text, (sum(counts[:i]) + k) / fps)
        for i, scene in enumerate(scenes)
        for k in range(counts[i])
    ]
    if audio and sound is None:
        sound = _tone(sum(counts) / fps)
    return write_mp4(frames, size, fps, gop, sound, codec)


def _picture(scene: Scene, k: int, size, text, seconds: float) -> Image.Image:
    image = Image.new("RGB", size, scene.colour)
    draw = ImageDraw.Draw(image)
    x = (k * 6) % (size[0] - 20) if scene.moving else 10
    draw.rectangle([x, 30, x + 20, 50], fill=(255, 255, 255))
    if text and seconds >= text[1]:
        draw.text((8, 70), text[0], fill=(0, 0, 0))
    return image


def _tone(seconds: float) -> np.ndarray:
    times = np.arange(int(seconds * 16_000)) / 16_000
    return (0.2 * np.sin(2 * np.pi * 440 * times)).astype(np.float32)
