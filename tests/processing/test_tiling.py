"""Tiling plans, the analytic token count, and deterministic pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from omniloom.config import ImageSettings
from omniloom.errors import InvalidRequest
from omniloom.processing.media_tokens import MediaVocabulary, count_image_tokens, image_token_ids
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


@pytest.mark.parametrize("max_tiles", [1, 4, 6, 12])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("detail", ["low", "high", "auto"])
def test_layout_length_equals_analytic_count(size, detail, max_tiles):
    cfg = ImageSettings(max_tiles=max_tiles)
    plan = plan_image(*size, detail, cfg)
    vocab = MediaVocabulary(49152)
    ids = image_token_ids(plan, 49, vocab)
    assert len(ids) == count_image_tokens(plan, 49)
    assert ids.count(vocab.id("<|image_pad|>")) == plan.tiles * 49
    assert plan.grid_tiles <= max_tiles


def test_render_is_deterministic_and_shaped():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (333, 777, 3), dtype=np.uint8))
    plan = plan_image(777, 333, "high", CFG)
    a, b = render_tiles(image, plan), render_tiles(image.copy(), plan)
    assert a.dtype.is_floating_point is False
    assert a.shape == (plan.tiles, 3, 224, 224)
    assert bool((a == b).all())
