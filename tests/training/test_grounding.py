"""Grounding targets sit on the right cells, and a short grounding stage makes image tokens
read as the words for what they show on images it never saw."""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import normalize

from omniloom.eval.synthetic import SHAPES, make_sample, make_split
from omniloom.models.registry import load_model
from omniloom.training.data import encode_samples
from omniloom.training.grounding import BACKGROUND, cell_words, grounding_targets, word_embedding
from omniloom.training.trainer import GroundingTask


def _first(split: str, predicate) -> object:
    return next(s for s in (make_sample(split, i) for i in range(200)) if predicate(s))


def test_a_region_covers_the_cells_under_its_box():
    sample = _first("train", lambda s: len(s.regions) == 1 and s.regions[0].words[0] == "large")
    words = cell_words(sample, 7)
    x0, y0, x1, y1 = sample.regions[0].box
    covered = [c for c, w in enumerate(words) if w != BACKGROUND]
    assert covered, "a large object covers at least one cell"
    for cell in covered:
        cx, cy = (cell % 7 + 0.5) * 32, (cell // 7 + 0.5) * 32
        centre_cell = cell == int((y0 + y1) / 64) * 7 + int((x0 + x1) / 64)
        assert centre_cell or (x0 <= cx <= x1 and y0 <= cy <= y1)
    assert words[covered[0]] == sample.regions[0].words


def test_text_regions_name_the_text():
    sample = _first("train", lambda s: s.questions[0].kind == "ocr")
    assert sample.regions[0].words == (sample.questions[0].answer,)


@pytest.mark.slow
def test_grounding_makes_tokens_read_as_their_words():
    model = load_model(dtype="float32", fresh_adapter=True)
    train, held_out = make_split("train", 96), make_split("val", 16)
    task = GroundingTask(model, encode_samples(train, model), grounding_targets(train, model))
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.vlm.projector.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(120):
        loss = task.loss(torch.randint(len(train), (32,), generator=generator).tolist())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        projected = model.vlm.projector(encode_samples(held_out, model))
        shapes = {w: normalize(word_embedding(model, (w,)), dim=0) for w in SHAPES}
    hits = total = 0
    for sample, tokens in zip(held_out, projected, strict=True):
        for cell, words in enumerate(cell_words(sample, 7)):
            shape = set(SHAPES).intersection(words)
            if not shape:
                continue
            sims = {w: float(normalize(tokens[cell], dim=0) @ v) for w, v in shapes.items()}
            hits += max(sims, key=sims.get) in shape
            total += 1
    assert total >= 10
    assert hits / total >= 0.8, f"{hits}/{total} object cells closest to their shape word"
