"""OCR with rapidocr's bundled PP-OCR ONNX models, pinned to the files inside the wheel.

Every model path is given explicitly so rapidocr never reaches for a download, and
onnxruntime's telemetry is switched off before it is imported.
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
        with self._lock:
            result = self._ocr(np.asarray(image.convert("RGB"))[:, :, ::-1])
        if result.txts is None:
            return []
        return [OcrLine(t, float(s)) for t, s in zip(result.txts, result.scores, strict=True)]


@cache
def shared_ocr() -> OcrEngine:
    return OcrEngine()
