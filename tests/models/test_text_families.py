"""Text-only families through the text spec, against ``transformers`` on the same tiny random
checkpoint: Qwen3 (per-head query/key norms, its own head width) from safetensors and from a
GGUF file laid out as llama.cpp's converter writes it (F32 and Q8_0), with the checkpoint's
own tokenizer and chat template, greedy tokens, and the same outputs in the engine beside
other requests."""

from __future__ import annotations

import pytest
import torch

from omniloom.config import EngineSettings
from omniloom.engine.engine import Engine
from omniloom.engine.sampling import SamplingParams
from omniloom.models.registry import load_model
from tests.engine.test_scheduler import run_all, text_prompt
from tests.models.tiny_checkpoints import gguf_from_hf, qwen3

QUESTIONS = ("What is in this picture?", "It's 2024, isn't it?", "Count: 12345\n\n  (cat) [dog]")


@pytest.fixture(scope="module")
def qwen3_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen3") / "tiny-qwen3"
    reference, tokenizer = qwen3(directory)
    return directory, reference, tokenizer


def _reference_ids(tokenizer, question: str) -> list[int]:
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)[
        "input_ids"
    ]


def _logits(model, ids: list[int]) -> torch.Tensor:
    net = model.vlm
    with torch.inference_mode():
        return net.backbone(net.embed_ids(torch.tensor(ids))[None])[0]


@pytest.mark.parametrize("tie", [False, True])
def test_qwen3_safetensors_logits_and_prompt(tmp_path, tie):
    reference, tokenizer = qwen3(tmp_path, tie=tie)
    ours = load_model(weights=tmp_path, dtype="float32")
    assert ours.family == "text" and ours.modalities == {"text"}
    for question in QUESTIONS:
        ids = _reference_ids(tokenizer, question)
        assert text_prompt(ours, question).token_ids == ids
        with torch.inference_mode():
            expected = reference(torch.tensor([ids])).logits[0]
        torch.testing.assert_close(_logits(ours, ids), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("qtype", "tolerance"), [("F32", 1e-5), ("Q8_0", 2e-2)])
def test_qwen3_gguf_matches_the_safetensors(qwen3_checkpoint, tmp_path, qtype, tolerance):
    directory, reference, tokenizer = qwen3_checkpoint
    path = gguf_from_hf(directory, tmp_path / f"tiny-qwen3-{qtype}.gguf", "qwen3", qtype)
    ours = load_model(weights=path, dtype="float32")
    assert ours.name == path.stem and ours.template is not None
    for text in (*QUESTIONS, "IT'S\r\n\n   x1 22 (y)"):  # split as the checkpoint splits
        reference_split = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
        assert ours.tokenizer._tok.pre_tokenizer.pre_tokenize_str(text) == reference_split
    for question in QUESTIONS:
        ids = _reference_ids(tokenizer, question)
        assert text_prompt(ours, question).token_ids == ids
        with torch.inference_mode():
            expected = reference(torch.tensor([ids])).logits[0]
        torch.testing.assert_close(_logits(ours, ids), expected, atol=tolerance, rtol=0)


def test_qwen3_greedy_in_the_engine_beside_other_requests(qwen3_checkpoint):
    directory, reference, tokenizer = qwen3_checkpoint
    ours = load_model(weights=directory, dtype="float32")
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, logprobs=0)
    engine = Engine(ours, EngineSettings(step_tokens=32, kv_cache_mb=8))
    try:
        prompts = [text_prompt(ours, q) for q in QUESTIONS]
        alone = [run_all(engine, [p], params)[0] for p in prompts]
        together = run_all(engine, prompts, params)
    finally:
        engine.shutdown()
    reference.generation_config.eos_token_id = None
    for question, solo, batched in zip(QUESTIONS, alone, together, strict=True):
        ids = torch.tensor([_reference_ids(tokenizer, question)])
        expected = reference.generate(ids, max_new_tokens=16, do_sample=False)[0, ids.shape[1] :]
        got = [lp.token_id for lp in solo.logprobs]
        assert got == expected.tolist()
        assert [lp.token_id for lp in batched.logprobs] == got
