"""The synthetic data set is deterministic and its splits are disjoint; scoring is strict."""

from __future__ import annotations

import re

import numpy as np

from omniloom.eval import scoring
from omniloom.eval.synthetic import FONTS, make_sample, make_split


def test_same_index_same_sample():
    a, b = make_sample("train", 7), make_sample("train", 7)
    assert a.caption == b.caption and a.questions == b.questions
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_splits_differ_and_test_fonts_are_unseen():
    train = {s.caption for s in make_split("train", 40)}
    test = {s.caption for s in make_split("test", 40)}
    assert train != test
    assert not set(FONTS["test"]) & set(FONTS["train"])


def test_test_shades_are_new_but_in_family():
    import random

    from omniloom.eval.synthetic import COLOURS, shade

    for colour in COLOURS:
        rng = random.Random(0)
        train = {shade(colour, "train", rng) for _ in range(400)}
        test = {shade(colour, "test", rng) for _ in range(400)}
        assert len(train) > 300 and not train & test  # a wide spread, and disjoint
        others = {c: {shade(c, "train", rng) for _ in range(200)} for c in COLOURS if c != colour}
        assert all(not test & shades for shades in others.values())


def test_questions_are_unambiguous_and_pope_is_balanced():
    samples = make_split("train", 400)
    exists = [q for s in samples for q in s.questions if q.kind == "exists"]
    yes = sum(q.answer == "yes" for q in exists) / len(exists)
    assert 0.4 < yes < 0.6
    for s in samples:
        for q in s.questions:
            if q.kind == "colour":
                shape = q.question.split()[-1].rstrip("?")
                assert s.caption.count(f" {shape} ") == 1, (s.caption, q)
    kinds = {q.kind for s in samples for q in s.questions}
    assert kinds == {"count", "colour", "shape", "size", "position", "exists", "ocr"}


def test_position_replies_place_both_things_then_answer():
    questions = [q for s in make_split("train", 200) for q in s.questions if q.kind == "position"]
    assert len(questions) > 100
    for q in questions:
        a, relation, b = re.fullmatch(
            r"Is the (\w+ \w+) (left of|above) the (\w+ \w+)\?", q.question
        ).groups()
        places = (
            ("on the left", "on the right")
            if relation == "left of"
            else ("at the top", "at the bottom")
        )
        assert re.fullmatch(f"The {a} is (.+) and the {b} is (.+), so (yes|no)\\.", q.reply)
        assert any(p in q.reply for p in places)
        assert q.reply.endswith(f"so {q.answer}.")
        assert scoring.is_correct("position", q.reply, q.answer)


def test_extraction_by_kind():
    assert scoring.is_correct("count", "There are three shapes.", "3")
    assert scoring.is_correct("exists", "Yes, there is.", "yes")
    assert not scoring.is_correct("exists", "No.", "yes")
    assert scoring.is_correct("colour", "The triangle is blue.", "blue")
    assert scoring.is_correct("ocr", 'The text says "Stop".', "stop")
    assert scoring.is_correct("ocr", "stop", "stop")
    assert not scoring.is_correct("ocr", "The text says stop.", "stop")  # exact match, not contains
    assert scoring.is_correct("ocr", 'The text says: "The North."', "north")  # articles dropped


def test_naming_accepts_any_listed_word_or_its_plural():
    assert scoring.is_correct("name", "The image shows two tabby cats.", "cat|kitten")
    assert scoring.is_correct("name", "A pile of coins.", "coin|money")
    assert not scoring.is_correct("name", "A category of things.", "cat|kitten")


def test_pope_metrics():
    def s(answer, pred):
        return scoring.Scored("exists", answer, pred, answer == pred, 0.1, 51)

    m = scoring.pope([s("yes", "yes"), s("yes", "no"), s("no", "yes"), s("no", "no")])
    assert m["accuracy"] == 0.5 and m["yes_ratio"] == 0.5
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["hallucination_rate"] == 0.5


def test_wilson_interval_brackets_the_rate_and_narrows_with_more_questions():
    wilson_interval = scoring.wilson_interval
    low, high = wilson_interval(28, 40)
    assert round(low, 3) == 0.546 and round(high, 3) == 0.819  # the textbook 95% interval
    wide, narrow = wilson_interval(7, 10), wilson_interval(700, 1000)
    assert wide[0] < narrow[0] < 0.7 < narrow[1] < wide[1]
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
