"""Gemma 3 text through its spec, against ``transformers`` on a tiny random checkpoint whose
prompts outrun the sliding window: prompt ids, logits, and greedy tokens in the engine alone
and batched, with prompts prefilled in chunks across the window's edge. The same from a GGUF
file as llama.cpp's converter writes one, whose SentencePiece vocabulary must tokenize as
SentencePiece itself does (``test_tokenizer_and_template``)."""

from __future__ import annotations

import pytest
import torch

from omniloom import kernels
from omniloom.config import EngineSettings
from omniloom.engine.engine import Engine
from omniloom.engine.sampling import SamplingParams
from omniloom.models.registry import load_model
from omniloom.models.specs.gemma3 import gguf_layer_types
from omniloom.processing.prompt import Message, TextPart, build_prompt
from tests.engine.test_scheduler import run_all
from tests.models.tiny_checkpoints import gemma3, gemma3_gguf

QUESTIONS = (
    "What is in this picture? Describe it in a few words.",
    "The quick brown fox jumps over the lazy dog.",
    "cat",
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gemma3")
    reference, tokenizer = gemma3(directory)
    return reference, tokenizer, load_model(weights=directory, dtype="float32")


def _ids(model, question: str) -> list[int]:
    messages = [Message("user", [TextPart(question)])]
    return build_prompt(messages, model.template, model.tokenizer).token_ids


def _reference_ids(tokenizer, question: str) -> list[int]:
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)[
        "input_ids"
    ]


def test_spec_and_window(checkpoint):
    _, _, ours = checkpoint
    cfg = ours.vlm.backbone.config
    assert ours.family == "gemma3" and ours.modalities == {"text"}
    assert cfg.sliding_layers == (0, 2) and cfg.sliding_window == 8
    assert not cfg.plain_llama_layers  # layer by layer, not the fused Llama stack


@pytest.mark.parametrize("question", QUESTIONS)
def test_prompt_ids_and_logits_match_transformers(checkpoint, question):
    reference, tokenizer, ours = checkpoint
    ids = _ids(ours, question)
    assert ids == _reference_ids(tokenizer, question)
    net = ours.vlm
    with torch.inference_mode():
        logits = net.backbone(net.embed_ids(torch.tensor(ids))[None])[0]
        expected = reference(input_ids=torch.tensor([ids])).logits[0]
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("our_kernels", [True, False], ids=["kernels", "pytorch"])
def test_greedy_tokens_in_the_engine_beside_other_requests(checkpoint, our_kernels, monkeypatch):
    reference, _, ours = checkpoint
    if not our_kernels:  # the PyTorch path: padded decodes and masked prefill chunks
        monkeypatch.setattr(kernels, "usable", lambda *args, **kwargs: False)
    _check_greedy_alone_and_batched(reference, ours)


def _check_greedy_alone_and_batched(reference, ours) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, logprobs=0)
    prompts = [
        build_prompt([Message("user", [TextPart(q)])], ours.template, ours.tokenizer)
        for q in QUESTIONS
    ]
    engine = Engine(ours, EngineSettings(step_tokens=7, kv_cache_mb=8))  # chunks of 7 tokens
    try:
        alone = [run_all(engine, [p], params)[0] for p in prompts]
        together = run_all(engine, prompts, params)
    finally:
        engine.shutdown()
    reference.generation_config.eos_token_id = None
    for prompt, solo, batched in zip(prompts, alone, together, strict=True):
        ids = torch.tensor([prompt.token_ids])
        out = reference.generate(input_ids=ids, max_new_tokens=16, do_sample=False)
        expected = out[0, ids.shape[1] :].tolist()
        assert [lp.token_id for lp in solo.logprobs] == expected
        assert [lp.token_id for lp in batched.logprobs] == expected


@pytest.fixture(scope="module")
def gguf_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("gemma3-gguf") / "tiny-gemma3.gguf"
    reference, vocabulary = gemma3_gguf(path)
    return reference, vocabulary, load_model(weights=path, dtype="float32")


def test_gguf_layer_pattern_follows_llama_cpp():
    full = [i for i, kind in enumerate(gguf_layer_types(6, 26)) if kind == "full_attention"]
    assert full == [5, 11, 17, 23]  # Gemma 3 1B: every sixth layer
    assert gguf_layer_types([True, False], 2) == ["sliding_attention", "full_attention"]
    assert set(gguf_layer_types(0, 4)) == {"sliding_attention"}


def test_gguf_spec_reads_llama_cpp_metadata(gguf_checkpoint):
    _, vocabulary, ours = gguf_checkpoint
    cfg = ours.vlm.backbone.config
    assert ours.family == "gemma3" and ours.modalities == {"text"}
    assert cfg.sliding_layers == (0, 2) and cfg.sliding_window == 8
    assert (cfg.rope_theta, cfg.local_rope_theta, cfg.rope_factor) == (1e6, 1e4, 4.0)
    end_of_turn = vocabulary.PieceToId("<end_of_turn>")
    assert {vocabulary.eos_id(), end_of_turn} <= ours.tokenizer.stop_ids


@pytest.mark.parametrize("question", QUESTIONS)
def test_gguf_prompt_ids_and_logits_match_transformers(gguf_checkpoint, question):
    reference, vocabulary, ours = gguf_checkpoint
    ids = _ids(ours, question)
    rendered = f"<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\n"
    assert ids == [vocabulary.bos_id(), *vocabulary.encode(rendered)]
    net = ours.vlm
    with torch.inference_mode():
        logits = net.backbone(net.embed_ids(torch.tensor(ids))[None])[0]
        expected = reference(input_ids=torch.tensor([ids])).logits[0]
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_gguf_greedy_tokens_in_the_engine_beside_other_requests(gguf_checkpoint):
    reference, _, ours = gguf_checkpoint
    _check_greedy_alone_and_batched(reference, ours)
