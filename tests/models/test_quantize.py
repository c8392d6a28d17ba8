"""Weight formats: packed layers stay close to the fp32 layers and the real model's predictions."""

from __future__ import annotations

import pytest
import torch

from omniloom.models.quantize import PackedLinear, pack_weights, settle_dtypes


@pytest.mark.parametrize(("weight_format", "tolerance"), [("bfloat16", 0.01), ("int8", 0.02)])
def test_packed_linear_is_close_to_the_float_layer(weight_format, tolerance):
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 96, bias=True)
    x = torch.randn(5, 256)
    expected = linear(x)
    with torch.inference_mode():
        got = PackedLinear(linear.weight, linear.bias, weight_format)(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert (got - expected).norm() / expected.norm() < tolerance


@pytest.mark.parametrize("weight_format", ["bfloat16", "float16", "int8"])
def test_packed_model_predicts_like_the_float_model(weight_format):
    from omniloom.models.registry import build_backbone, load_checkpoint, smollm2_gguf_path

    ckpt = load_checkpoint(smollm2_gguf_path())
    reference = build_backbone(ckpt)
    packed = build_backbone(ckpt)
    assert pack_weights(packed, weight_format) == 30 * 7 + 1  # every projection plus the head
    ids = torch.tensor([[1, 504, 3458, 314, 253, 2799, 28, 3733, 314, 4130, 30, 378, 3458]])
    with torch.inference_mode():
        want = reference(reference.embed(ids)).argmax(-1)
        got = packed(packed.embed(ids)).argmax(-1)
    assert (want == got).float().mean() >= 0.9
    table = packed.model.embed_tokens.weight
    if weight_format == "int8":  # the head gets its own int8 copy; the table stays bf16
        assert table.dtype == torch.bfloat16 and packed.lm_head.weight.dtype == torch.int8
    else:  # one shared 16-bit copy, as tied in the checkpoint
        assert packed.lm_head.weight.data_ptr() == table.data_ptr()
    bytes_ = sum(m.nbytes() for m in packed.modules() if isinstance(m, PackedLinear))
    assert bytes_ < 0.55 * sum(p.nbytes for p in reference.parameters() if p.dim() == 2) + 1


def test_a_16_bit_checkpoint_is_packed_in_place_and_predicts_as_before():
    """bf16 weights served as bf16 keep their own storage (no fp32 copy on the way), norms and
    biases compute in fp32, and the logits equal those of the widen-then-pack route."""
    import copy

    from omniloom.models.backbones.config import DecoderConfig
    from omniloom.models.backbones.llama import LlamaForCausalLM

    cfg = DecoderConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        attention_bias=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval().requires_grad_(False)
    widened = copy.deepcopy(model).float()
    pack_weights(widened, "bfloat16")
    attention = model.model.layers[0].self_attn
    storage = (attention.q_proj.weight.data_ptr(), model.model.embed_tokens.weight.data_ptr())
    settle_dtypes(model, "bfloat16")
    attention = model.model.layers[0].self_attn
    assert isinstance(attention.q_proj, PackedLinear)
    assert (
        attention.q_proj.weight.data_ptr(),
        model.model.embed_tokens.weight.data_ptr(),
    ) == storage
    assert attention.q_proj.bias.dtype == model.model.norm.weight.dtype == torch.float32
    ids = torch.tensor([[1, 5, 9, 30, 2, 7]])
    with torch.inference_mode():
        assert torch.equal(model(model.embed(ids)), widened(widened.embed(ids)))
