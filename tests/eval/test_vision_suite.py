"""A scaled-down vision suite through the real HTTP server: all conditions, full report; real
photographs through the hybrid and auto paths."""

from __future__ import annotations

import json

import openai
import pytest

from omniloom.config import Settings
from omniloom.eval import vision
from omniloom.models.registry import default_tile_layout
from omniloom.runtime import BackgroundServer, build_state


@pytest.mark.slow
def test_suite_writes_report_for_all_conditions(tmp_path):
    items = vision.synthetic_items(14)
    jsonl = tmp_path / "set.jsonl"
    item = items[0]
    jsonl.write_text(
        json.dumps({"image": item.image_url, "question": item.question, "answer": item.answer})
        + "\n"
    )
    assert vision.jsonl_items(jsonl)[0].answer == item.answer
    state = build_state(Settings.from_env(dtype="float32"))
    assert state.cascade_loaded  # auto by default: ready before the first image
    with BackgroundServer(state) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        results = vision.run_suite(client, state.model.name, items)
        photos = vision.run_suite(
            client, state.model.name, vision.photo_items()[:2], ("hybrid", "auto")
        )
    vision.write_report(results, tmp_path / "out", "test")
    assert set(results) == {"native", "cascade", "blind"}
    native, blind = results["native"]["summary"], results["blind"]["summary"]
    assert (
        native["image_tokens_per_request"] == 2 + default_tile_layout(224).length
        and blind["image_tokens_per_request"] == 0
    )
    assert native["latency_p95_s"] >= native["latency_p50_s"] > 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "POPE accuracy" in report  # no OCR question among these: no OCR row
    assert ("OCR exact match" in report) == any(i.kind == "ocr" for i in items)
    assert "95% Wilson interval" in report and "] |" in report
    assert (tmp_path / "out" / "accuracy_by_type.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "report.json").read_text())["cascade"]["items"]
    hybrid, auto = photos["hybrid"]["summary"], photos["auto"]["summary"]
    assert (
        hybrid["n"] == 2
        and hybrid["image_tokens_per_request"] == 2 + default_tile_layout(224).length
    )  # image and description
    assert auto["paths"] == {"cascade": 2} and auto["image_tokens_per_request"] == 0
    assert results["native"]["summary"]["paths"] == {"native": 14}
