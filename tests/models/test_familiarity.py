"""The familiarity test: the shipped bank is what the recipe makes, the held-out synthetic images
pass it and real photographs do not, and the encoder pass behind it is the classifier's own."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from omniloom.config import Settings
from omniloom.eval.synthetic import make_sample
from omniloom.eval.vision import PHOTOS, photo
from omniloom.models.encoders.efficientnet_lite import EfficientNetLite0Encoder
from omniloom.models.familiarity import BANK_KEY, Familiarity, build_bank, whole_image_tile
from omniloom.models.registry import ADAPTER
from omniloom.training.trainer import Recipe, _train_samples, bank_stage


@pytest.fixture(scope="module")
def encoder():
    return EfficientNetLite0Encoder()


@pytest.fixture(scope="module")
def shipped_bank():
    with safe_open(str(ADAPTER), "pt") as f:
        return f.get_tensor(BANK_KEY)


def test_look_gives_the_networks_own_logits(encoder):
    tiles = whole_image_tile(make_sample("test", 0).image, 224)
    pooled, logits = encoder.look(tiles)
    with torch.inference_mode():
        assert torch.equal(logits, encoder.net((tiles.float() - 127.0) / 128.0))
    assert pooled.shape == (1, 1280)


def test_the_shipped_bank_is_what_the_recipe_makes(encoder, shipped_bank):
    recipe = Recipe()
    assert shipped_bank.shape == (512, 1280) and shipped_bank.dtype == torch.float16
    first = [s.image for s in _train_samples(bank_stage(recipe), 32)]
    remade = build_bank(encoder, first)
    torch.testing.assert_close(remade.float(), shipped_bank[:32].float(), atol=2e-3, rtol=0)


def test_held_out_images_are_familiar_and_photographs_are_not(encoder, shipped_bank):
    familiarity = Familiarity(shipped_bank, Settings().familiar_threshold)

    def similarity(image):
        return familiarity.similarity(encoder.look(whole_image_tile(image, 224))[0][0])

    held_out = [similarity(make_sample("test", i).image) for i in range(40)]
    photos = {name: similarity(photo(name)) for name in PHOTOS}
    assert all(familiarity.familiar(s) for s in held_out)
    assert not any(familiarity.familiar(s) for s in photos.values()), photos
    assert min(held_out) - max(photos.values()) > 0.3  # a wide gap, not a tuned edge
