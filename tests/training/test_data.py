"""Training-only questions added to the generator's: the hard negatives for existence."""

import random

from omniloom.eval.synthetic import make_sample
from omniloom.training.data import hard_negative


def test_hard_negatives_are_absent_and_share_one_attribute_with_a_present_object():
    checked = 0
    for index in range(60):
        sample = make_sample("train", index)
        present = {r.words[1:3] for r in sample.regions if len(r.words) > 3}
        for question in hard_negative(sample, random.Random(index)):
            colour, shape = question.question.split()[3:5]
            assert question.answer == "no" and question.kind == "exists"
            assert (colour, shape) not in present
            assert any((colour == c) != (shape == s) for c, s in present)
            checked += 1
    assert checked > 30  # every shape scene gets one; text samples get none
