"""The vision path: the analytic token count equals what encoder + projector really emit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniloom.config import ImageSettings, Limits
from omniloom.media.image import decode_image
from omniloom.models.default_layout import ENCODER_STRIDE as STRIDE
from omniloom.models.encoders.efficientnet_lite import EfficientNetLite0Encoder
from omniloom.models.projectors import build_projector
from omniloom.processing.image_item import prepare_image
from omniloom.processing.media_tokens import MediaVocabulary, TileLayout
from tests.conftest import png_bytes

RASTER = TileLayout.raster(49)
SIZES = [
    (17, 9),
    (224, 224),
    (225, 224),
    (640, 480),
    (480, 640),
    (1920, 1080),
    (300, 3000),
    (3000, 300),
    (1001, 999),
    (50, 400),
]


@pytest.fixture(scope="module")
def encoder():
    return EfficientNetLite0Encoder(pretrained=True)


def test_stride_constant_matches_encoder(encoder):
    assert encoder.tokens_per_tile() == (224 // STRIDE) ** 2 == 49


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("detail", ["low", "high", "auto"])
def test_counted_tokens_equal_emitted(encoder, size, detail):
    rng = np.random.default_rng(size[0] * 7 + size[1])
    data = png_bytes(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    decoded = decode_image(data, Limits())
    projector = build_projector("mlp", encoder.feature_dim, 64, encoder.tokens_per_tile())
    item = prepare_image(
        decoded,
        detail,
        ImageSettings(),
        TileLayout.raster(projector.num_output_tokens(49)),
        MediaVocabulary(1000),
    )
    with torch.inference_mode():
        emitted = projector(encoder(item.tiles()))
    assert emitted.shape[0] * emitted.shape[1] == item.num_placeholders()
    ids = item.token_ids()
    assert len(ids) == item.num_tokens()
    assert ids.count(item.vocab.id("<|image_pad|>")) == emitted.shape[0] * emitted.shape[1]


@pytest.mark.parametrize("kind", ["linear", "mlp", "resampler"])
def test_projectors_declare_their_token_count(encoder, kind):
    projector = build_projector(kind, encoder.feature_dim, 96, encoder.tokens_per_tile())
    tiles = torch.randint(0, 256, (3, 3, 224, 224), dtype=torch.uint8)
    with torch.inference_mode():
        out = projector(encoder(tiles))
    assert out.shape == (3, projector.num_output_tokens(49), 96)


@pytest.mark.parametrize("kind", ["linear", "mlp", "resampler"])
def test_projectors_know_which_cell_a_feature_came_from(kind):
    """Without a position per cell, moving features between cells only moves the tokens (or,
    for the resampler, changes nothing): a CNN encoder's features alone do not say where."""
    torch.manual_seed(0)
    projector = build_projector(kind, 32, 24, 49)
    torch.nn.init.normal_(projector.position.table)
    features = torch.randn(2, 49, 32)
    shuffled = torch.randperm(49)
    with torch.no_grad():
        out, moved = projector(features), projector(features[:, shuffled])
        if kind != "resampler":
            out = out[:, shuffled]
        assert not torch.allclose(out, moved, atol=1e-3)
        torch.nn.init.zeros_(projector.position.table)
        out, moved = projector(features), projector(features[:, shuffled])
        if kind != "resampler":
            out = out[:, shuffled]
        assert torch.allclose(out, moved, atol=1e-5)
    with pytest.raises(ValueError, match="50 feature cells per tile"):
        projector(torch.randn(1, 50, 32))


def test_same_bytes_same_tensors(encoder, astronaut_jpeg):
    a = prepare_image(
        decode_image(astronaut_jpeg, Limits()), "high", ImageSettings(), RASTER, MediaVocabulary(10)
    )
    b = prepare_image(
        decode_image(astronaut_jpeg, Limits()), "high", ImageSettings(), RASTER, MediaVocabulary(10)
    )
    assert a.content_hash == b.content_hash
    ta, tb = a.tiles(), b.tiles()
    assert torch.equal(ta, tb)
    assert torch.equal(encoder(ta), encoder(tb))
