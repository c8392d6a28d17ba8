"""Videos for tests, made with PyAV: scenes of solid colour with a moving square, cut hard from
one to the next, optionally with a line of text from a given second and a sound track (a tone,
or given 16 kHz samples such as speech)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image, ImageDraw


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
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        track = container.add_stream("aac", rate=16_000) if audio or sound is not None else None
        t = 0
        for scene in scenes:
            for k in range(round(scene.seconds * fps)):
                image = _picture(scene, k, size, text, t / fps)
                frame = av.VideoFrame.from_image(image)
                frame.pts = t
                container.mux(stream.encode(frame))
                t += 1
        container.mux(stream.encode(None))
        if track is not None:
            samples = _tone(t / fps) if sound is None else sound.astype(np.float32)
            _sound_track(container, track, samples)
    return buffer.getvalue()


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


def _sound_track(container, stream, samples: np.ndarray) -> None:
    frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
    frame.sample_rate = 16_000
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=16_000)
    for piece in (*resampler.resample(frame), *resampler.resample(None)):
        piece.pts = None
        container.mux(stream.encode(piece))
    container.mux(stream.encode(None))
