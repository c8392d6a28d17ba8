"""Familiarity: how far apart the adapter's kind of image and everything else lie.

Scores, with the shipped adapter's bank, held-out test images (and copies re-encoded, stretched,
padded, turned grey or cropped: a user's version of the same kind of picture), the real photos of
the ``photos`` suite and other scikit-image pictures (a text page, textures, microscopy, a logo,
a colour wheel). ``auto`` sends an image's tokens only at ``familiar_threshold`` or more; the
table shows each group's range and how many pass. Writes ``benchmarks/results/familiarity.json``.
Usage: ``.venv/bin/python benchmarks/familiarity.py [--images 400]``
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from safetensors import safe_open

from omniloom.config import Settings
from omniloom.eval.synthetic import make_sample
from omniloom.eval.vision import PHOTOS, photo
from omniloom.models.encoders.efficientnet_lite import EfficientNetLite0Encoder
from omniloom.models.familiarity import BANK_KEY, Familiarity, whole_image_tile
from omniloom.models.registry import ADAPTER

RESULTS = Path(__file__).parent / "results" / "familiarity.json"
OTHER_PICTURES = (
    "page",
    "text",
    "brick",
    "grass",
    "gravel",
    "retina",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "colorwheel",
    "checkerboard",
    "cell",
    "shepp_logan_phantom",
)  # fixed pictures only (binary_blobs draws new blobs on every call)


def jpeg(image: Image.Image, quality: int = 40) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


VARIANTS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "JPEG quality 40": jpeg,
    "stretched 3×, 2×": lambda i: i.resize((i.width * 3, i.height * 2)),
    "padded 60 px white": lambda i: ImageOps.expand(i, border=60, fill=(255, 255, 255)),
    "greyscale": lambda i: i.convert("L").convert("RGB"),
    "top-left quarter": lambda i: i.crop((0, 0, i.width // 2, i.height // 2)),
}


def skimage_picture(name: str) -> Image.Image:
    """One of ``OTHER_PICTURES`` as RGB: stacks give their middle slice, other types are
    rescaled to 0–255 (the photos come from the eval's own ``photo``)."""
    from skimage import data

    pixels = getattr(data, name)()
    pixels = np.asarray(pixels[0] if isinstance(pixels, tuple) else pixels)
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        pixels = pixels[pixels.shape[0] // 2]
    if pixels.dtype != np.uint8:
        pixels = pixels.astype(float)
        pixels = (255 * (pixels - pixels.min()) / (np.ptp(pixels) + 1e-9)).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB")


def groups(count: int) -> dict[str, list[Image.Image]]:
    test = [make_sample("test", i).image for i in range(count)]
    out = {f"held-out test images ({count})": test}
    out |= {f"test, {name}": [change(i) for i in test[:100]] for name, change in VARIANTS.items()}
    out["the photos suite (10)"] = [photo(n) for n in PHOTOS]
    out[f"other scikit-image pictures ({len(OTHER_PICTURES)})"] = [
        skimage_picture(n) for n in OTHER_PICTURES
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="held-out test images")
    args = parser.parse_args()
    with safe_open(str(ADAPTER), "pt") as f:
        familiarity = Familiarity(f.get_tensor(BANK_KEY), Settings().familiar_threshold)
    encoder = EfficientNetLite0Encoder()
    rows = []
    for name, images in groups(args.images).items():
        scores = [
            familiarity.similarity(encoder.look(whole_image_tile(i, 224))[0][0]) for i in images
        ]
        familiar = sum(familiarity.familiar(s) for s in scores)
        rows.append(
            {
                "group": name,
                "min": min(scores),
                "median": float(np.median(scores)),
                "max": max(scores),
                "familiar": familiar,
                "n": len(scores),
            }
        )
    print(f"threshold {familiarity.threshold}\n")
    print("| group | min | median | max | familiar |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['group']} | {r['min']:.3f} | {r['median']:.3f} | {r['max']:.3f} "
            f"| {r['familiar']}/{r['n']} |"
        )
    RESULTS.write_text(json.dumps({"threshold": familiarity.threshold, "groups": rows}, indent=1))


if __name__ == "__main__":
    main()
