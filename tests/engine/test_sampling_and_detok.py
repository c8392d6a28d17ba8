"""Sampling reproducibility and the stop-string-aware incremental detokenizer."""

from __future__ import annotations

import torch

from omniloom.engine.detokenizer import IncrementalDetokenizer
from omniloom.engine.sampling import Sampler, SamplingParams


class ByteDecoder:
    """Each id is one byte of UTF-8: lets tests split characters across tokens."""

    def decode(self, ids, skip_special=True):
        return bytes(ids).decode("utf-8", errors="replace")


def _stream(text: str, stop=()):
    detok = IncrementalDetokenizer(ByteDecoder(), stop)
    pieces = []
    for b in text.encode():
        pieces.append(detok.push(b))
        if detok.stopped:
            break
    pieces.append(detok.flush())
    return pieces, detok


def test_multibyte_characters_are_never_split():
    pieces, _ = _stream("héllo 東京")
    assert "".join(pieces) == "héllo 東京"
    assert all("\ufffd" not in p for p in pieces)


def test_stop_string_truncates_and_is_never_shown():
    pieces, detok = _stream("Hello END world", stop=("END",))
    assert "".join(pieces) == "Hello "
    assert detok.stopped
    assert not any("E" in p for p in pieces)


def test_held_back_prefix_is_released_when_it_is_not_a_stop():
    pieces, detok = _stream("a EN b", stop=("END",))
    assert "".join(pieces) == "a EN b" and not detok.stopped


def test_same_seed_same_samples_and_choices_differ():
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=0.9, top_p=0.8, seed=42, n=2)

    def draws(index: int) -> list[int]:
        sampler = Sampler(params, index)
        return [sampler(logits) for _ in range(8)]

    assert draws(0) == draws(0) and draws(1) == draws(1)
    assert draws(0) != draws(1)  # each choice has its own generator (seed + index)


def test_top_p_keeps_only_the_nucleus():
    logits = torch.tensor([[10.0, 9.0, -5.0, -5.0]])
    sampler = Sampler(SamplingParams(temperature=1.0, top_p=0.5, seed=0))
    assert {sampler(logits) for _ in range(50)} == {0}


def test_greedy_is_argmax():
    logits = torch.tensor([[0.1, 3.0, 2.0]])
    assert Sampler(SamplingParams(temperature=0.0))(logits) == 1


def test_top_k_and_min_p_filter():
    logits = torch.tensor([[5.0, 4.9, 4.8, 0.0]])
    top1 = Sampler(SamplingParams(temperature=1.0, top_k=1, seed=0))
    assert {top1(logits) for _ in range(30)} == {0}
    min_p = Sampler(SamplingParams(temperature=1.0, min_p=0.5, seed=0))
    assert {min_p(logits) for _ in range(60)} <= {0, 1, 2}


def test_penalties_discourage_repeats():
    logits = torch.tensor([[3.0, 2.9, 0.0]])
    plain = Sampler(SamplingParams(temperature=0.0))
    assert [plain(logits) for _ in range(3)] == [0, 0, 0]
    presence = Sampler(SamplingParams(temperature=0.0, presence_penalty=0.5))
    assert [presence(logits) for _ in range(2)] == [0, 1]
    repetition = Sampler(SamplingParams(temperature=0.0, repetition_penalty=1.2), prompt_ids=[0])
    assert repetition(logits) == 1  # 3.0 / 1.2 < 2.9
    frequency = Sampler(SamplingParams(temperature=0.0, frequency_penalty=0.06))
    assert [frequency(logits) for _ in range(3)] == [0, 0, 1]  # 3.0 - 2·0.06 < 2.9


def test_the_steps_batched_argmax_is_used_only_where_it_is_the_answer():
    logits = torch.tensor([[3.0, 2.9, 0.0]])
    raw_argmax = int(logits.argmax())
    assert Sampler(SamplingParams(temperature=0.0))(logits, raw_argmax) == 0
    presence = Sampler(SamplingParams(temperature=0.0, presence_penalty=0.5))
    assert [presence(logits, raw_argmax) for _ in range(2)] == [0, 1]  # the penalty wins
    drawn = Sampler(SamplingParams(temperature=1.0, top_k=1, seed=0))
    assert drawn(torch.tensor([[0.0, 5.0, 0.0]]), argmax=0) == 1  # sampling ignores the hint


def test_sampling_params_pickle_with_their_grammar(default_model):
    """A cluster sends jobs between processes: the compiled grammar must arrive whole."""
    import pickle

    from omniloom.config import Limits
    from omniloom.engine.grammar import GrammarCompiler
    from omniloom.engine.sampling import SamplingParams

    grammars = GrammarCompiler.for_model(default_model)
    grammar = grammars.compile({"type": "json_object"}, Limits())
    params = SamplingParams(max_tokens=9, temperature=0.0, grammar=grammar, stop=("}",))
    copy = pickle.loads(pickle.dumps(params))
    assert copy == params  # the grammar is not compared: checked below
    assert copy.grammar.serialize_json() == grammar.serialize_json()
    assert pickle.loads(pickle.dumps(SamplingParams())).grammar is None
