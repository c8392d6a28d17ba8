"""Our decoder against transformers: tiny random Llama/Qwen2 via safetensors, and SmolLM2 GGUF."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from omniloom.models.registry import build_backbone, load_checkpoint, smollm2_gguf_path


def _tiny_hf(arch: str, tie: bool):
    import transformers

    common = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=10000.0,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    if arch == "qwen2":
        return transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common)).eval()
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**common)).eval()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("tie", [True, False])
def test_tiny_random_safetensors_parity(tmp_path, arch, tie):
    ref = _tiny_hf(arch, tie)
    ref.save_pretrained(tmp_path)
    ours = build_backbone(load_checkpoint(tmp_path))
    ids = torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = ref(ids).logits
        got = ours(ours.embed(ids))
    assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_kv_cache_matches_full_forward(tmp_path):
    ref = _tiny_hf("llama", True)
    ref.save_pretrained(tmp_path)
    ours = build_backbone(load_checkpoint(tmp_path))
    ids = torch.randint(0, 97, (1, 24), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = ours(ours.embed(ids))
        cache = ours.new_cache(1, 32)
        first = ours(ours.embed(ids[:, :10]), cache)
        middle = ours(ours.embed(ids[:, 10:17]), cache)  # a chunk with past keys
        steps = [ours(ours.embed(ids[:, i : i + 1]), cache) for i in range(17, 24)]
    assert_close(torch.cat([first, middle, *steps], dim=1), full, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def smollm2_pair():
    from transformers import AutoModelForCausalLM

    path = smollm2_gguf_path()
    ref = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    ours = build_backbone(load_checkpoint(path))
    return ref, ours


@pytest.mark.slow
def test_smollm2_gguf_logits_parity(smollm2_pair, default_model):
    ref, ours = smollm2_pair
    ids = torch.tensor(
        [default_model.tokenizer.encode("The quick brown fox jumps over the lazy dog. 1234")]
    )
    with torch.inference_mode():
        assert_close(ours(ours.embed(ids)), ref(ids).logits, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_smollm2_gguf_greedy_32_tokens(smollm2_pair, default_model):
    ref, ours = smollm2_pair
    tok = default_model.tokenizer
    prompt = default_model.template.render([{"role": "user", "content": "Name three colours."}])
    ids = torch.tensor([tok.encode(prompt)])
    with torch.inference_mode():
        expected = ref.generate(ids, max_new_tokens=32, min_new_tokens=32, do_sample=False)[
            0, ids.shape[1] :
        ]
        cache = ours.new_cache(1, ids.shape[1] + 32)
        logits = ours(ours.embed(ids), cache, last_only=True)
        got = []
        for _ in range(32):
            got.append(int(logits[0, -1].argmax()))
            logits = ours(ours.embed(torch.tensor([[got[-1]]])), cache)
    assert got == expected.tolist()
