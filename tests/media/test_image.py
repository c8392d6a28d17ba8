"""Hostile and awkward images: each is refused with a clear MediaError, or cleaned."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from omniloom.config import Limits
from omniloom.errors import MediaError
from omniloom.media.fetch import check_public_address, decode_data_url, load_image_bytes
from omniloom.media.image import decode_image
from tests.conftest import png_bytes

LIMITS = Limits()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size with almost no data (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: (  # noqa: E731
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    )
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"not an image at all", "could not be decoded"),
        (_png_header_only(100_000, 100_000), "pixels"),
        (_png_header_only(8_000, 8_000), "pixels"),
    ],
    ids=["empty", "garbage", "bomb-header", "over-limit"],
)
def test_refused(data, message):
    with pytest.raises(MediaError, match=message):
        decode_image(data, LIMITS)


def test_truncated_jpeg_refused():
    full = png_bytes(np.full((64, 64, 3), 200, np.uint8), "JPEG")
    with pytest.raises(MediaError, match=r"truncated or corrupt|could not be decoded"):
        decode_image(full[: len(full) // 2], LIMITS)


def test_too_many_bytes_refused():
    with pytest.raises(MediaError, match="limit"):
        decode_image(b"\0" * 2048, Limits(max_image_bytes=1024))


def test_exif_orientation_applied_and_metadata_stripped():
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    exif[0x8825] = {1: "N", 2: (52.0, 22.0, 0.0)}  # GPS IFD
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    decoded = decode_image(buf.getvalue(), LIMITS)
    assert (decoded.width, decoded.height) == (20, 40)
    assert not decoded.image.info and not decoded.image.getexif()


def test_transparency_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    decoded = decode_image(png_bytes(rgba), LIMITS)
    assert decoded.image.mode == "RGB" and decoded.image.getpixel((0, 0)) == (255, 255, 255)


def test_content_hash_follows_pixels_not_container():
    arr = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    png, bmp = decode_image(png_bytes(arr), LIMITS), decode_image(png_bytes(arr, "BMP"), LIMITS)
    assert png.content_hash == bmp.content_hash


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,@@@@",
        "data:image/png,raw",
        "data:;base64",
        "data:image/png;base64,abc",
    ],
)
def test_bad_data_urls(url):
    with pytest.raises(MediaError, match="data URL"):
        decode_data_url(url, LIMITS)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x.png",
        "http://localhost/x.png",
        "http://[::1]/x.png",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/x.png",
        "http://2130706433/x.png",  # 127.0.0.1 in decimal
        "http://[::ffff:127.0.0.1]/x.png",
    ],
)
def test_private_addresses_refused(url):
    with pytest.raises(MediaError, match=r"non-public|resolve"):
        load_image_bytes(url, LIMITS)


@pytest.mark.parametrize(
    "url", ["http://a..b/x.png", "http://[::1/x.png", "http://host:99999/x", "http://.\u3002/"]
)
def test_malformed_urls_are_media_errors(url):
    with pytest.raises(MediaError, match="not valid"):
        load_image_bytes(url, LIMITS)


@pytest.mark.parametrize("url", ["ftp://example.com/x.png", "gopher://x"])
def test_other_schemes_refused(url):
    with pytest.raises(MediaError, match="Only https"):
        load_image_bytes(url, LIMITS)


def test_local_files_only_from_the_configured_directory(tmp_path):
    media, outside = tmp_path / "media", tmp_path / "secret.png"
    media.mkdir()
    (media / "ok.png").write_bytes(png_bytes(np.zeros((4, 4, 3), np.uint8)))
    outside.write_bytes(b"secret")
    (media / "link.png").symlink_to(outside)
    limits = Limits(local_media_dir=str(media))
    assert load_image_bytes(f"file://{media}/ok.png", limits).startswith(b"\x89PNG")
    with pytest.raises(MediaError, match="not served"):
        load_image_bytes("file:///etc/passwd", LIMITS)
    for escape in (
        f"file://{media}/../secret.png",
        f"file://{media}/link.png",
        "file:///etc/passwd",
    ):
        with pytest.raises(MediaError, match="not in the local media directory"):
            load_image_bytes(escape, limits)


def test_public_address_passes():
    assert check_public_address("8.8.8.8", 443) == "8.8.8.8"
