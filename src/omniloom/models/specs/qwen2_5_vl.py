"""Qwen2.5-VL: Qwen2-VL's layout (same processor, span tokens, M-RoPE decoder and weight
names) with a ViT that uses RMSNorm, a gated SiLU MLP and window attention
(``encoders/qwen2_vl_vit.py``). For still images the M-RoPE positions are Qwen2-VL's: the
time axis only spaces video frames apart.
"""

from __future__ import annotations

from pathlib import Path

from omniloom.models.encoders.qwen2_vl_vit import VisionConfig
from omniloom.models.specs import qwen2_vl
from omniloom.models.specs.base import SpecContext

ARCHITECTURES = ("Qwen2_5_VLForConditionalGeneration",)
image_processor = qwen2_vl.image_processor
video_processor = qwen2_vl.video_processor


def load(directory: Path, ctx: SpecContext):
    return qwen2_vl.load_family(
        directory, ctx, "qwen2.5-vl", lambda raw, _: VisionConfig.from_hf_2_5(raw)
    )
