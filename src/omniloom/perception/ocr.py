"""OCR with rapidocr's bundled PP-OCR ONNX models, pinned to the files inside the wheel.

Every model path is given explicitly so rapidocr never reaches for a download, and
onnxruntime's telemetry is switched off before it is imported. Images longer than 4:1 are
padded with white to 4:1 first: rapidocr's detector fails on a thin strip (a 1×5000 image
becomes a side of zero pixels) and scales the short side up to 736 pixels, so a strip padded
only to 20:1 costs 736×14,720 pixels (13 s on a 2-core EPYC). At 4:1 a 1200×40 line of text
still reads, in about a second, and a blank 10×5000 strip costs under two.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

_MODELS = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
}


MAX_ASPECT = 4  # long side : short side given to rapidocr's detector
MIN_SIDE = 32


@dataclass(frozen=True)
class OcrLine:
    text: str
    score: float


class OcrEngine:
    def __init__(self, min_score: float = 0.5, threads: int = 1):
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import rapidocr
        from rapidocr import RapidOCR

        model_dir = Path(rapidocr.__file__).parent / "models"
        params = {f"{task}.model_path": str(model_dir / name) for task, name in _MODELS.items()}
        params.update(
            {
                "Global.log_level": "error",
                "Global.text_score": min_score,
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )
        self._ocr = RapidOCR(params=params)
        self._lock = threading.Lock()

    def read(self, image: Image.Image) -> list[OcrLine]:
        """Lines of text, top to bottom, with recognition scores."""
        pixels = np.asarray(padded_for_ocr(image.convert("RGB")))[:, :, ::-1]
        with self._lock:
            result = self._ocr(pixels)
        if result.txts is None:
            return []
        return [OcrLine(t, float(s)) for t, s in zip(result.txts, result.scores, strict=True)]


def padded_for_ocr(image: Image.Image) -> Image.Image:
    """``image`` on a white canvas at least ``MIN_SIDE`` square and no thinner than
    1:``MAX_ASPECT`` (the picture itself at the top left, unscaled)."""
    w, h = image.size
    width = max(w, MIN_SIDE, -(-h // MAX_ASPECT))
    height = max(h, MIN_SIDE, -(-w // MAX_ASPECT))
    if (width, height) == (w, h):
        return image
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    return canvas


@cache
def shared_ocr() -> OcrEngine:
    return OcrEngine()
