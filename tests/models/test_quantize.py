"""Int8 weights: per-channel quantisation stays close to the float layers and the real model."""

from __future__ import annotations

import torch

from omniloom.models.quantize import Int8Linear, quantize_int8


def test_int8_linear_is_close_to_the_float_layer():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96, bias=True)
    x = torch.randn(5, 256)
    expected = linear(x)
    got = Int8Linear(linear)(x).float()
    assert got.shape == expected.shape
    assert (got - expected).norm() / expected.norm() < 0.02


def test_int8_model_predicts_like_the_float_model():
    from omniloom.models.registry import build_backbone, load_checkpoint, smollm2_gguf_path

    ckpt = load_checkpoint(smollm2_gguf_path())
    reference = build_backbone(ckpt, torch.float32)
    quantized = build_backbone(ckpt, torch.bfloat16)
    assert quantize_int8(quantized) == 30 * 7 + 1  # every projection plus the output head
    ids = torch.tensor([[1, 504, 3458, 314, 253, 2799, 28, 3733, 314, 4130, 30, 378, 3458]])
    with torch.inference_mode():
        want = reference(reference.embed(ids)).argmax(-1)
        got = quantized(quantized.embed(ids)).argmax(-1)
    assert (want == got).float().mean() >= 0.9
    assert quantized.model.embed_tokens.weight.dtype == torch.bfloat16  # the table stays bf16
