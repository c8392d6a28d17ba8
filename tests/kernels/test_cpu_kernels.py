"""Our C++ CPU kernels against PyTorch's reference operators, and their batch invariance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from omniloom import kernels
from omniloom.models.backbones.config import DecoderConfig
from omniloom.models.backbones.llama import LlamaForCausalLM, apply_rope
from omniloom.models.backbones.paged_kv import KVPool, PagedBatch, SequenceChunk
from omniloom.models.lora import attach_lora
from omniloom.models.quantize import PackedLinear, pack_weights


@pytest.fixture(scope="module", autouse=True)
def built():
    assert kernels.load() is not None, "the kernels must compile here (g++ and ninja)"
    assert kernels.load().vectorized(), "the AVX2/FMA/F16C path should be compiled in"


def _off(monkeypatch):
    monkeypatch.setattr(kernels, "_built", [None])


@pytest.mark.parametrize("weight_format", ["float32", "bfloat16", "float16", "int8"])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 7, 33])
@pytest.mark.parametrize(("k", "n"), [(576, 96), (96, 13), (20, 7)])
def test_skinny_linear_matches_torch(weight_format, rows, k, n):
    gen = torch.Generator().manual_seed(rows * 100 + k)
    x, w, bias = (torch.randn(s, generator=gen) for s in ((rows, k), (n, k), (n,)))
    linear = PackedLinear(w, bias, weight_format) if weight_format != "float32" else None
    if linear is None:
        got, want = kernels.skinny_linear(x, w, None, bias), F.linear(x, w, bias)
    else:
        with torch.inference_mode():
            got = linear(x)
        if weight_format == "int8" and k % 32 == 0:
            want = _q8_reference(x, linear.weight, linear.scales, bias)
        else:
            scales = linear.scales[:, None] if linear.scales is not None else 1.0
            want = F.linear(x, linear.weight.float() * scales, bias)
    assert_close(got, want, rtol=1e-4, atol=1e-3)


def _q8_reference(x, weight, scales, bias):
    """int8 weights · activations quantized in blocks of 32 (scale max|x|/127), exact sums."""
    rows, k = x.shape
    blocks = x.view(rows, k // 32, 32)
    amax = blocks.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = torch.round(blocks * inv).double()
    sums = torch.einsum("mbi,nbi->mnb", q, weight.view(-1, k // 32, 32).double())
    dots = (sums * (amax / 127.0).double().squeeze(-1)[:, None, :]).sum(-1)
    return (dots * scales.double() + bias.double()).float()


def test_int8_activation_quantization_stays_close_to_float():
    gen = torch.Generator().manual_seed(5)
    x, w = torch.randn(4, 576, generator=gen), torch.randn(300, 576, generator=gen)
    with torch.inference_mode():
        got = PackedLinear(w, None, "int8")(x)
    want = F.linear(x, w)
    assert (got - want).norm() / want.norm() < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int8])
# wide steps only; a one-vector remainder (40 on AVX2, 48 on AVX-512); a scalar tail; int8's
# half 64-byte chunk (96)
@pytest.mark.parametrize("k", [576, 40, 48, 21, 96])
def test_a_row_gives_the_same_bits_alone_or_in_any_batch(dtype, k):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(37, k, generator=gen)
    w = (torch.randn(200, k, generator=gen) * 30).to(dtype)
    scales = torch.rand(200, generator=gen) if dtype == torch.int8 else None
    batch = kernels.skinny_linear(x, w, scales)
    for size in (1, 2, 3, 4, 5, 7, 16):  # every tile height (3 on AVX2, 4 on AVX-512)
        for start in (0, 7, 37 - size):
            part = kernels.skinny_linear(x[start : start + size], w, scales)
            assert torch.equal(part, batch[start : start + size])


def test_rms_norm_rope_and_silu_mul_match_torch():
    gen = torch.Generator().manual_seed(2)
    x, weight = torch.randn(5, 64, generator=gen), torch.randn(64, generator=gen)
    want = weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    assert_close(kernels.rms_norm(x, weight, 1e-5), want)
    cos, sin = torch.randn(5, 16, generator=gen), torch.randn(5, 16, generator=gen)
    q = torch.randn(1, 5, 3 * 16, generator=gen)  # (batch, tokens, heads · head_dim)
    want = apply_rope(q.view(1, 5, 3, 16).transpose(1, 2), cos, sin).transpose(1, 2)
    assert_close(kernels.rope_(q.clone(), cos, sin).view(1, 5, 3, 16), want)
    gate, up = torch.randn(7, 33, generator=gen), torch.randn(7, 33, generator=gen)
    assert_close(kernels.silu_mul(gate, up), F.silu(gate) * up)


def test_silu_mul_is_accurate_far_out_and_row_invariant():
    gate = torch.linspace(-120, 120, 9 * 41).view(9, 41)  # 8-wide and scalar-tail columns
    up = torch.ones_like(gate)
    got = kernels.silu_mul(gate, up)
    assert_close(got, F.silu(gate.double()).float() * up, rtol=3e-7, atol=1e-30)
    for row in range(9):
        assert torch.equal(
            kernels.silu_mul(gate[row : row + 1], up[row : row + 1]), got[row : row + 1]
        )


@pytest.mark.parametrize("d", [16, 20, 64, 72])
def test_paged_attention_matches_sdpa_over_gathered_slots(d):
    gen = torch.Generator().manual_seed(3)
    heads, kv_heads, pool_slots = 6, 2, 40
    keys, values = (torch.randn(pool_slots, kv_heads, d, generator=gen) for _ in range(2))
    lengths = torch.tensor([5, 17, 1])
    slots = torch.zeros(3, 17, dtype=torch.long)
    for row, length in enumerate(lengths.tolist()):
        slots[row, :length] = torch.randperm(pool_slots, generator=gen)[:length]
    q = torch.randn(3, heads, d, generator=gen)
    got = kernels.paged_attention(q, keys, values, slots, lengths, d**-0.5)
    for row, length in enumerate(lengths.tolist()):
        k = keys[slots[row, :length]].transpose(0, 1)[None]
        v = values[slots[row, :length]].transpose(0, 1)[None]
        want = F.scaled_dot_product_attention(q[row][None, :, None], k, v, enable_gqa=True)
        assert_close(got[row], want[0, :, 0])


CFG = DecoderConfig(
    vocab_size=101, hidden_size=64, intermediate_size=96, num_layers=2, num_heads=4, num_kv_heads=2
)


def _decode_step(model: LlamaForCausalLM, pool: KVPool, lengths: list[int]) -> torch.Tensor:
    """One decode-only step for sequences with contexts ``lengths`` (prefilled already)."""
    chunks = [SequenceChunk(torch.arange(i * 32, i * 32 + n), 1) for i, n in enumerate(lengths)]
    ids = torch.arange(len(lengths)) + 3
    with torch.inference_mode():
        return model.hidden_states(model.embed(ids)[None], PagedBatch(pool, chunks))[0]


@pytest.mark.parametrize("weight_format", ["float32", "int8"])
def test_fused_stack_equals_the_layer_by_layer_path(monkeypatch, weight_format):
    torch.manual_seed(0)
    model = LlamaForCausalLM(CFG).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    pack_weights(model, weight_format)
    pool = KVPool(CFG.num_layers, 8, 16, CFG.num_kv_heads, CFG.dim_per_head, torch.float32)
    pool.keys.normal_()
    pool.values.normal_()
    keys, values = pool.keys.clone(), pool.values.clone()
    fused = _decode_step(model, pool, [9, 20, 3])
    assert model._stack is not None  # the step really took the fused path
    pool.keys.copy_(keys)
    pool.values.copy_(values)
    monkeypatch.setattr(type(model), "_fused_stack_applies", lambda *a: False)
    assert torch.equal(_decode_step(model, pool, [9, 20, 3]), fused)  # bit for bit
    _off(monkeypatch)
    pool.keys.copy_(keys)
    pool.values.copy_(values)
    tolerance = 2e-2 if weight_format == "int8" else 1e-4  # PyTorch keeps fp32 activations
    assert_close(_decode_step(model, pool, [9, 20, 3]), fused, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("weight_format", ["float32", "int8"])
def test_a_prompt_gives_the_same_bits_however_it_is_chunked(weight_format):
    torch.manual_seed(0)
    model = LlamaForCausalLM(CFG).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    pack_weights(model, weight_format)
    ids = torch.randint(0, 101, (23,), generator=torch.Generator().manual_seed(4))
    slots = torch.arange(23)

    def run(splits: list[int]) -> torch.Tensor:
        pool = KVPool(CFG.num_layers, 2, 16, CFG.num_kv_heads, CFG.dim_per_head, torch.float32)
        out, done = [], 0
        with torch.inference_mode():
            for n in splits:
                batch = PagedBatch(pool, [SequenceChunk(slots[: done + n], n)])
                out.append(model.hidden_states(model.embed(ids[done : done + n])[None], batch)[0])
                done += n
        return torch.cat(out)

    whole = run([23])
    assert torch.equal(run([10, 12, 1]), whole)
    assert torch.equal(run([1] * 23), whole)


def test_adapters_attached_after_a_fused_step_are_not_skipped():
    torch.manual_seed(0)
    model = LlamaForCausalLM(CFG).eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    pool = KVPool(CFG.num_layers, 8, 16, CFG.num_kv_heads, CFG.dim_per_head, torch.float32)
    pool.keys.normal_()
    pool.values.normal_()
    plain = _decode_step(model, pool, [5])
    assert model._stack is not None
    assert attach_lora(model, ("o_proj",), 4, 8.0)
    assert model._stack is None  # attach_lora told the decoder its layers changed
    for module in model.modules():
        if hasattr(module, "lora_b"):
            module.lora_b.data.normal_()
    assert not torch.equal(_decode_step(model, pool, [5]), plain)  # the adapter really ran
