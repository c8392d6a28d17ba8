"""Decode untrusted image bytes into a clean RGB picture.

The header is read first and the pixel count bounded before any full decode (decompression
bombs never expand). EXIF orientation is applied, then the pixels are copied into a fresh image
so no EXIF, XMP, ICC or GPS data travels further. Transparency is composited onto white.
The content hash covers the decoded pixels, so it keys caches by what the model sees.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from omniloom.config import Limits
from omniloom.errors import MediaError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, metadata-free, orientation applied
    source_format: str
    content_hash: str  # sha256 of size + RGB pixels

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def _open_checked(data: bytes, limits: Limits) -> Image.Image:
    if not data:
        raise MediaError("The image is empty (0 bytes).", param="image_url")
    if len(data) > limits.max_image_bytes:
        raise MediaError(
            f"The image is {len(data)} bytes; the limit is {limits.max_image_bytes} bytes.",
            param="image_url",
        )
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise MediaError(
            f"The image declares more pixels than the limit of {limits.max_image_pixels} pixels.",
            param="image_url",
        ) from exc
    except Exception as exc:  # any decoder failure on untrusted bytes is the image's fault
        raise MediaError(
            "The image could not be decoded: its bytes are not a supported image "
            f"({', '.join(ALLOWED_FORMATS)}).",
            param="image_url",
        ) from exc
    pixels = img.width * img.height
    if img.width < 1 or img.height < 1 or pixels > limits.max_image_pixels:
        raise MediaError(
            f"The image is {img.width}x{img.height} = {pixels} pixels; "
            f"the limit is {limits.max_image_pixels} pixels.",
            param="image_url",
        )
    return img


def _to_clean_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    rgb = img.convert("RGB")
    return Image.frombytes("RGB", rgb.size, rgb.tobytes())


def decode_image(data: bytes, limits: Limits) -> DecodedImage:
    """Decode, bound, orient and strip one image; raise ``MediaError`` with a reason otherwise."""
    img = _open_checked(data, limits)
    fmt = img.format or "unknown"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img.load()
            clean = _to_clean_rgb(img)
    except (Exception, Image.DecompressionBombWarning) as exc:  # whatever a decoder raises
        raise MediaError(
            f"The {fmt} image is truncated or corrupt and could not be decoded.", param="image_url"
        ) from exc
    digest = hashlib.sha256(f"{clean.width}x{clean.height}:".encode())
    digest.update(clean.tobytes())
    return DecodedImage(clean, fmt, digest.hexdigest())
