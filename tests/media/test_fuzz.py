"""Property-based fuzzing of the media decoders: any bytes give an image or a MediaError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from omniloom.config import Limits
from omniloom.errors import MediaError
from omniloom.media.fetch import decode_data_url
from omniloom.media.image import decode_image

LIMITS = Limits(max_image_pixels=4_000_000)
FUZZ = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


def _seed_files() -> dict[str, bytes]:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    files = {}
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt)
        files[fmt] = buf.getvalue()
    return files


SEEDS = _seed_files()


def _decode_or_refuse(data: bytes) -> None:
    try:
        decoded = decode_image(data, LIMITS)
    except MediaError as exc:
        assert exc.status == 400 and exc.message
        return
    assert decoded.image.mode == "RGB" and decoded.width * decoded.height <= 4_000_000


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    _decode_or_refuse(data)


@pytest.mark.parametrize("fmt", sorted(SEEDS))
@FUZZ
@given(data=st.data())
def test_mutated_real_files(fmt, data):
    """Flip, cut and splice bytes of a valid file of each format (headers included)."""
    blob = bytearray(SEEDS[fmt])
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(blob) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            blob[at] = data.draw(st.integers(0, 255))
        elif action == "cut":
            del blob[at : at + data.draw(st.integers(1, 64))]
        else:
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=64))
        if not blob:
            break
    _decode_or_refuse(bytes(blob))


@FUZZ
@given(st.text(max_size=200))
def test_data_url_parser(text):
    try:
        decode_data_url("data:" + text, LIMITS)
    except MediaError as exc:
        assert "data URL" in exc.message
