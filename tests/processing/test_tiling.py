"""Tiling plans, the analytic token count, and deterministic pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from omniloom.config import ImageSettings
from omniloom.errors import InvalidRequest
from omniloom.processing.media_tokens import (
    PLACE_WORDS,
    MediaVocabulary,
    TileLayout,
    count_image_tokens,
    image_token_ids,
)
from omniloom.processing.tiling import candidate_grids, choose_grid, plan_image, render_tiles

CFG = ImageSettings()
SIZES = [
    (1, 1),
    (64, 64),
    (224, 224),
    (300, 3000),
    (3000, 300),
    (1920, 1080),
    (1080, 1920),
    (640, 480),
    (1000, 333),
    (449, 450),
    (5000, 20),
]


def test_candidate_grids_respect_max_tiles():
    grids = candidate_grids(6)
    assert all(c * r <= 6 for c, r in grids)
    assert (3, 2) in grids and (2, 3) in grids and (6, 1) in grids and (4, 2) not in grids


@pytest.mark.parametrize(
    ("size", "grid"),
    [
        ((1920, 1080), (2, 1)),
        ((1080, 1920), (1, 2)),
        ((300, 3000), (1, 6)),
        ((512, 512), (2, 2)),
        ((100, 100), (1, 1)),
    ],
)
def test_grid_follows_aspect_ratio(size, grid):
    assert choose_grid(*size, max_tiles=6, tile_size=224) == grid


def test_detail_modes():
    assert plan_image(1920, 1080, "low", CFG).tiles == 1
    high = plan_image(1920, 1080, "high", CFG)
    assert (high.detail, high.cols, high.rows, high.tiles) == ("high", 2, 1, 3)
    assert plan_image(300, 200, "auto", CFG).detail == "low"
    assert plan_image(1920, 1080, "auto", CFG).detail == "high"
    assert plan_image(100, 100, "high", CFG).detail == "low"  # a 1×1 grid is the thumbnail
    with pytest.raises(InvalidRequest, match="detail"):
        plan_image(10, 10, "ultra", CFG)


def _words_as_ids(text: str) -> list[int]:
    """A stand-in tokenizer: one id per word, below the media ids."""
    return [len(word) for word in text.split()]


LAYOUTS = {"raster": TileLayout.raster(49), "places": TileLayout.places(7, _words_as_ids)}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("max_tiles", [1, 4, 6, 12])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("detail", ["low", "high", "auto"])
def test_layout_length_equals_analytic_count(size, detail, max_tiles, layout):
    cfg = ImageSettings(max_tiles=max_tiles)
    plan = plan_image(*size, detail, cfg)
    vocab = MediaVocabulary(49152)
    ids = image_token_ids(plan, layout, vocab)
    assert len(ids) == count_image_tokens(plan, layout)
    assert ids.count(vocab.id("<|image_pad|>")) == plan.tiles * 49
    assert plan.grid_tiles <= max_tiles


def test_places_layout_groups_each_cell_once_under_its_third():
    layout = LAYOUTS["places"]
    assert sorted(layout.order()) == list(range(49))
    sizes = [len(cells) for _, cells in layout.groups]
    assert sizes == [4, 6, 4, 6, 9, 6, 4, 6, 4]  # thirds of 7: columns 0–1, 2–4, 5–6
    top_left, centre = layout.groups[0][1], layout.groups[4][1]
    assert top_left == (0, 1, 7, 8) and 24 in centre  # cell 24: the grid's middle
    labels = [label for label, _ in layout.groups]
    assert labels == [tuple(_words_as_ids(w)) for row in PLACE_WORDS for w in row]
    assert layout.length == 49 + 13  # "top left" is two words, "top" one


def test_render_is_deterministic_and_shaped():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (333, 777, 3), dtype=np.uint8))
    plan = plan_image(777, 333, "high", CFG)
    a, b = render_tiles(image, plan), render_tiles(image.copy(), plan)
    assert a.dtype == np.uint8
    assert a.shape == (plan.tiles, 3, 224, 224)
    assert np.array_equal(a, b)
