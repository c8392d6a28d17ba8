"""LoRA merges exactly; the quick recipe trains, lowers loss, checkpoints and resumes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.testing import assert_close

from omniloom.eval.synthetic import make_split
from omniloom.models.lora import attach_lora, load_lora, lora_state, set_lora_active
from omniloom.models.registry import (
    ADAPTER,
    adapter_layout,
    build_tile_layout,
    load_model,
    trained_on_descriptions,
)
from omniloom.training.data import (
    CAPTION_PROMPTS,
    build_examples,
    encode_samples,
    image_item,
    perception_examples,
)
from omniloom.training.trainer import (
    QUICK_RECIPE,
    Trainer,
    bank_stage,
    batch_loss,
    mean_loss,
    step_precision,
)


def test_loaded_lora_equals_trained_and_switches_off():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    plain = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    plain.load_state_dict(model.state_dict())
    x = torch.randn(5, 8)
    base_out = plain(x)
    attach_lora(model, ("0", "2"), rank=2, alpha=4)
    for name, p in model.named_parameters():
        if "lora_b" in name:
            nn.init.normal_(p)
    expected = model(x)
    assert load_lora(plain, lora_state(model)) == 2
    assert_close(plain(x), expected)
    set_lora_active(plain, False)
    assert_close(plain(x), base_out)


@pytest.mark.slow
def test_quick_recipe_trains_resumes_and_reproduces(tmp_path):
    first = _train(tmp_path / "a")
    assert [len(losses) for losses in first.losses] == [s.steps for s in QUICK_RECIPE.stages]
    instruct = [s.task for s in QUICK_RECIPE.stages].index("instruct")
    assert first.val_loss["instruct"] < first.losses[instruct][0]  # it learned something
    assert (tmp_path / "a" / "loss.png").stat().st_size > 1000
    meta = safe_open(str(tmp_path / "a" / "adapter.safetensors"), "pt").metadata()
    assert trained_on_descriptions(meta)  # so it reads them
    assert adapter_layout(meta) == "raster"  # and serves with the layout it learned
    served = load_model(dtype="float32", adapter_path=tmp_path / "a" / "adapter.safetensors")
    assert served.tile_layout.name == "raster"
    images = QUICK_RECIPE.stages[bank_stage(QUICK_RECIPE)].images  # the bank's: unit rows
    assert served.familiarity_bank.shape == (images, 1280)
    assert_close(
        served.familiarity_bank.float().norm(dim=-1), torch.ones(images), atol=1e-3, rtol=0
    )
    resumed = _train(tmp_path / "a")  # finished run: resumes to the end, no new steps
    assert resumed.losses == first.losses
    again = _train(tmp_path / "b")  # retraining from the recipe reproduces the result
    assert again.val_loss["instruct"] == pytest.approx(first.val_loss["instruct"], rel=0.05)


def test_bfloat16_steps_track_float32_and_stay_float32_outside():
    model = load_model(dtype="float32", fresh_adapter=True)
    val = make_split("val", 4)
    examples = build_examples(val, model, "instruct", seed=1)[:4]
    features = encode_samples(val, model)
    losses = {}
    for precision in ("float32", "bfloat16"):
        with step_precision(precision):
            losses[precision] = batch_loss(model, examples, features)
    assert losses["bfloat16"].dtype == torch.float32
    assert float(losses["bfloat16"]) != float(losses["float32"])  # the matmuls ran in bf16
    assert float(losses["bfloat16"]) == pytest.approx(float(losses["float32"]), rel=0.02)
    assert all(p.dtype == torch.float32 for p in model.vlm.projector.parameters())
    with pytest.raises(ValueError, match="unknown training precision"):
        step_precision("float16")


def _train(out):
    model = load_model(dtype="float32", fresh_adapter=True)
    return Trainer(model, QUICK_RECIPE, out, progress_bar=False).run()


def test_the_adapters_recipe_names_its_layout():
    assert adapter_layout({}) == "raster"  # adapters from before layouts
    assert adapter_layout({"recipe": json.dumps({"layout": "places"})}) == "places"
    with pytest.raises(ValueError, match="unknown tile layout"):
        build_tile_layout("spiral", 49, None)


def test_image_tokens_take_the_cells_in_the_layouts_order():
    model = load_model(dtype="float32", fresh_adapter=True)
    vlm = model.vlm
    assert vlm.tile_layout.name == "raster"  # no adapter, no layout learned
    tiles = image_item(make_split("val", 1)[0], model).tiles()
    raster = vlm.encode_tiles(tiles)
    vlm.tile_layout = build_tile_layout("places", 49, model.tokenizer)
    assert torch.equal(vlm.encode_tiles(tiles), raster[vlm.tile_layout.order()])


@pytest.mark.slow
def test_shipped_adapter_beats_untrained():
    assert ADAPTER.exists(), "the trained adapter must ship with the package"
    meta = safe_open(str(ADAPTER), "pt").metadata()
    assert "instruct" in json.loads(meta["val_loss"])
    val = make_split("val", 12)
    losses = {}
    for fresh in (True, False):
        model = load_model(dtype="float32", fresh_adapter=fresh)
        examples = build_examples(val, model, "instruct", seed=1)
        losses[fresh] = mean_loss(model, examples, encode_samples(val, model))
    assert losses[False] < 0.5 * losses[True]


def test_described_images_teach_passing_on_the_cascade_words():
    model = load_model(dtype="float32", fresh_adapter=True)
    examples = perception_examples(model, 20, seed=3)
    assert all(e.images == () for e in examples)  # no image tokens: the words stand for it
    for e in examples:
        text = model.tokenizer.decode(e.ids)
        block = text.split('<image-description source="perception" trust="untrusted">')[1]
        block = block.split("</image-description>")[0]
        answers = [model.tokenizer.decode(e.ids[s:t]) for s, t in e.answer_spans]
        named = next(a for a in answers if a.startswith("It shows "))
        for name in named.removeprefix("It shows ").split(".")[0].split(" or "):
            assert name in block
        if 'Text in it reads: "' in block:
            read = block.split('Text in it reads: "')[1].split('"')[0]
            assert any(a.startswith(read) for a in answers if a != named)


@torch.no_grad()
def test_a_batch_mixing_seen_and_described_images_scores_each_as_alone():
    model = load_model(dtype="float32", fresh_adapter=True)
    val = make_split("val", 2)
    seen = build_examples(val, model, "instruct", seed=1)[:2]
    examples = [seen[0], *perception_examples(model, 2, seed=1), seen[1]]
    features = encode_samples(val, model)
    tokens = [sum(end - start for start, end in e.answer_spans) for e in examples]
    alone = sum(
        float(batch_loss(model, [e], features)) * n for e, n in zip(examples, tokens, strict=True)
    )
    together = float(batch_loss(model, examples, features)) * sum(tokens)
    assert together == pytest.approx(alone, rel=1e-4)


def test_hybrid_examples_carry_the_image_tokens_and_the_cascade_block():
    from omniloom.perception.cascade import Perception
    from omniloom.perception.ocr import OcrLine

    model = load_model(dtype="float32", fresh_adapter=True)
    val = make_split("val", 2)
    seen = Perception([OcrLine("taxi", 0.9)], [("tabby cat", 0.6)])
    examples = build_examples(val, model, "instruct", seed=1, described={0: seen})
    block = seen.as_prompt_part().text
    for e in examples:
        text = model.tokenizer.decode(e.ids)
        image_tokens = int(torch.isin(torch.tensor(e.ids), model.vlm.placeholder_ids).sum())
        assert image_tokens == model.tile_layout.placeholders  # the image is there either way
        assert (block in text) == (e.images == (0,))  # and the block only beside image 0


def test_place_examples_ask_where_every_pair_stands_and_the_rest_once():
    model = load_model(dtype="float32", fresh_adapter=True)
    samples = make_split("val", 12)
    examples = build_examples(samples, model, "place", seed=1)
    for row, sample in enumerate(samples):
        text = "".join(model.tokenizer.decode(e.ids) for e in examples if e.images == (row,))
        pairs = len(sample.things) * (len(sample.things) - 1)
        assert text.count(" left of the ") + text.count(" above the ") == pairs
        others = [q for q in sample.questions if q.kind not in ("position", "exists")]
        assert all(text.count(q.question) == 1 for q in others)
        assert not any(prompt in text for prompt in CAPTION_PROMPTS)
    assert any(len(s.things) > 2 for s in samples)


def test_position_examples_ask_each_pair_alone_and_rehearse_the_rest_sometimes():
    model = load_model(dtype="float32", fresh_adapter=True)
    samples = make_split("val", 24)
    examples = build_examples(samples, model, "position", seed=1)
    rehearsed = 0
    for row, sample in enumerate(samples):
        convs = [e for e in examples if e.images == (row,)]
        texts = [model.tokenizer.decode(e.ids) for e in convs]
        asked = [q for q in sample.questions if q.kind == "position"]
        if asked:
            assert all(q.question in texts[0] and q.reply in texts[0] for q in asked)
            assert len(convs[0].answer_spans) == len(asked)
        rehearsed += len(convs) > bool(asked)
        assert sum(" left of the " in t or " above the " in t for t in texts) == bool(asked)
    assert 0 < rehearsed < len(samples)
