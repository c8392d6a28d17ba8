"""The text-quality check that compares weight formats: it measures the model, not the text."""

from __future__ import annotations

import random

from omniloom.eval import text_check


def test_real_prose_scores_better_than_the_same_tokens_shuffled(default_model):
    windows = text_check.windows(default_model.tokenizer, count=3, length=48)
    assert all(len(w) == 48 for w in windows) and windows[0] != windows[1]
    shuffled = [random.Random(i).sample(w, len(w)) for i, w in enumerate(windows)]
    prose = text_check.score(default_model, windows, continue_tokens=4)
    noise = text_check.score(default_model, shuffled, continue_tokens=4)
    assert prose.next_token_accuracy > noise.next_token_accuracy + 15
    assert prose.nll < noise.nll - 1.0
    assert all(len(c) == 4 for c in prose.continuations)


def test_a_model_agrees_with_itself_and_less_with_another_text(default_model):
    windows = text_check.windows(default_model.tokenizer, count=2, length=32)
    scores = text_check.score(default_model, windows, continue_tokens=4)
    assert text_check.agreement(scores, scores) == {
        "top1_agreement": 100.0,
        "identical_continuations": 100.0,
    }
    other = text_check.score(default_model, windows[::-1], continue_tokens=4)
    assert text_check.agreement(other, scores)["top1_agreement"] < 50.0
