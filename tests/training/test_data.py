"""Training conversations: cascade descriptions as the server writes them, mixed batches."""

from __future__ import annotations

import pytest
import torch

from omniloom.eval.synthetic import make_split
from omniloom.models.registry import load_model
from omniloom.training.data import NO_IMAGE, build_examples, cascade_examples, encode_samples
from omniloom.training.trainer import batch_loss


@pytest.fixture(scope="module")
def model():
    return load_model(dtype="float32")


def test_cascade_conversations_pass_every_label_on(model):
    examples = cascade_examples(model, 30, seed=5)
    assert all(e.image == NO_IMAGE for e in examples)
    for e in examples:
        text = model.tokenizer.decode(e.ids)
        assert '<image-description source="perception" trust="untrusted">' in text
        shown = text.split("It may show: ")[1].split("\n")[0]
        labels = [part.rsplit(" (", 1)[0] for part in shown.split("), ")]
        start, end = e.answer_spans[0]
        answers = " ".join(model.tokenizer.decode(e.ids[s:t]) for s, t in e.answer_spans)
        assert all(label in answers for label in labels), (labels, answers)
        assert end > start
    assert cascade_examples(model, 5, seed=5)[3].ids == examples[3].ids  # deterministic


def test_mixed_batch_scatters_each_image_into_its_own_conversation(model):
    samples = make_split("val", 3)
    features = encode_samples(samples, model)
    with_image = build_examples(samples, model, "instruct", seed=1)[:3]
    without = cascade_examples(model, 2, seed=1)
    batch = [without[0], with_image[0], without[1], with_image[2]]
    with torch.no_grad():
        mixed = batch_loss(model, batch, features)
        alone = [batch_loss(model, [e], features) for e in batch]
    tokens = [sum(end - start for start, end in e.answer_spans) for e in batch]
    expected = sum(loss * n for loss, n in zip(alone, tokens, strict=True)) / sum(tokens)
    torch.testing.assert_close(mixed, expected, rtol=1e-4, atol=1e-4)
