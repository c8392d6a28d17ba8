"""Encode frames (and an optional 16 kHz sound track) as an H.264/AAC MP4 with PyAV.

Used to make the synthetic videos that the video training stage and the video suite ask about,
and the test videos. Every frame's time is its index over ``fps``; ``gop`` sets the keyframe
interval exactly (no scene-cut keyframes), so keyframe sampling sees a known index. With one
encoder thread the decoded frames are the same on every run (the bytes may differ, in mode
decisions that reconstruct the same pixels).
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import av
import numpy as np
from PIL import Image

SOUND_RATE = 16_000


def write_mp4(
    frames: Iterable[Image.Image],
    size: tuple[int, int],
    fps: int,
    gop: int,
    sound: np.ndarray | None = None,
    codec: str = "libx264",
) -> bytes:
    """The MP4 bytes of ``frames`` (each ``size``) at ``fps``, with ``sound`` (mono float32
    samples at 16 kHz from the start) as an AAC track where given."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "threads": "1",  # threaded x264 decodes to different pixels from run to run
        }
        track = container.add_stream("aac", rate=SOUND_RATE) if sound is not None else None
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if track is not None:
            _write_sound(container, track, sound.astype(np.float32))
    return buffer.getvalue()


def _write_sound(container, stream, samples: np.ndarray) -> None:
    frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
    frame.sample_rate = SOUND_RATE
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=SOUND_RATE)
    for piece in (*resampler.resample(frame), *resampler.resample(None)):
        piece.pts = None
        container.mux(stream.encode(piece))
    container.mux(stream.encode(None))
