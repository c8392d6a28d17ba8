"""The converted-weights cache: a second load maps what the first converted, and gives the same
model; a change of source, format or an unreadable file never serves stale weights."""

from __future__ import annotations

import logging

import pytest
import torch

from omniloom.models.registry import load_model
from omniloom.models.specs.base import SpecContext
from omniloom.models.weight_cache import cache_file
from tests.models.tiny_checkpoints import gguf_from_hf, qwen3


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def tiny_gguf(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen3") / "tiny-qwen3"
    qwen3(directory, tie=request.param)
    return gguf_from_hf(directory, directory.parent / "tiny.gguf", "qwen3", "Q8_0")


def _logits(model, ids: list[int]) -> torch.Tensor:
    net = model.vlm
    with torch.inference_mode():
        return net.backbone(net.embed_ids(torch.tensor(ids))[None])[0]


def _load(path, cache_dir, weight_format):
    return load_model(weights=path, dtype=weight_format, cache_dir=cache_dir)


@pytest.mark.parametrize("weight_format", ["float32", "bfloat16", "int8"])
def test_the_cached_model_is_the_converted_one(tiny_gguf, tmp_path, weight_format):
    converted = _load(tiny_gguf, tmp_path, weight_format)
    cached_path = cache_file(
        tiny_gguf, SpecContext(weight_format=weight_format, cache_dir=tmp_path)
    )
    assert cached_path.exists()
    cached = _load(tiny_gguf, tmp_path, weight_format)
    ids = converted.tokenizer.encode("Hello there, how are you?")
    assert cached.tokenizer.encode("Hello there, how are you?") == ids
    assert cached.template.render([{"role": "user", "content": "hi"}], True) == (
        converted.template.render([{"role": "user", "content": "hi"}], True)
    )
    assert cached.context_length == converted.context_length
    torch.testing.assert_close(_logits(cached, ids), _logits(converted, ids), rtol=0, atol=0)
    ours, theirs = cached.vlm.backbone.state_dict(), converted.vlm.backbone.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(ours[k].dtype == theirs[k].dtype and torch.equal(ours[k], theirs[k]) for k in ours)
    backbone = cached.vlm.backbone
    if backbone.config.tie_embeddings and weight_format != "int8":  # one table, as converted
        head, table = backbone.lm_head.weight, backbone.model.embed_tokens.weight
        assert head.data_ptr() == table.data_ptr()


def test_every_format_and_source_has_its_own_file(tiny_gguf, tmp_path):
    names = {
        cache_file(tiny_gguf, SpecContext(weight_format=f, cache_dir=tmp_path))
        for f in ("float32", "bfloat16", "int8")
    }
    assert len(names) == 3
    changed = tmp_path / "changed.gguf"
    changed.write_bytes(tiny_gguf.read_bytes() + b"\0")
    ctx = SpecContext(weight_format="int8", cache_dir=tmp_path)
    assert cache_file(changed, ctx).name != cache_file(tiny_gguf, ctx).name


def test_an_unreadable_cache_file_is_converted_again(tiny_gguf, tmp_path, caplog):
    expected = _load(tiny_gguf, None, "int8")
    path = cache_file(tiny_gguf, SpecContext(weight_format="int8", cache_dir=tmp_path))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING):
        model = _load(tiny_gguf, tmp_path, "int8")
    assert "converting again" in caplog.text
    ids = expected.tokenizer.encode("Hello")
    torch.testing.assert_close(_logits(model, ids), _logits(expected, ids), rtol=0, atol=0)
    assert path.stat().st_size > 1000  # replaced by the real conversion
    assert not list(path.parent.glob("*.part"))
