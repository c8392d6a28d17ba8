"""Synthetic videos and their questions, and a scaled-down video suite through the real server:
the videos' facts match what sampling finds in them; native sends the frames, blind none; the
prior answers each kind's most common answer; the report holds every question kind."""

from __future__ import annotations

import json

import numpy as np
import openai
import pytest

from omniloom.config import Limits, Settings, VideoSettings
from omniloom.eval import scoring, video_suite, vision
from omniloom.eval.synthetic_video import make_video_sample
from omniloom.media import video
from omniloom.runtime import BackgroundServer, build_state


def _pixels(data: bytes) -> list:
    _, frames = video.sample(data, VideoSettings(fps=5.0, max_frames=100), Limits())
    return [np.asarray(frame.image) for frame in frames]


def test_videos_are_deterministic_and_their_answers_match_the_frames():
    for index in range(6):
        sample = make_video_sample("test", index)
        again = make_video_sample("test", index)
        assert all(map(np.array_equal, _pixels(sample.data), _pixels(again.data)))
        info, frames = video.sample(sample.data, VideoSettings(strategy="scene"), Limits())
        assert len(frames) == len(sample.scenes) == int(sample.questions[0].answer)
        assert info.seconds == pytest.approx(sample.seconds, abs=0.01)
        kinds = [q.kind for q in sample.questions]
        assert ("after_cut" in kinds) == (len(sample.scenes) > 1)
        assert ("text_time" in kinds) == (sample.text is not None)
    assert make_video_sample("train", 0).data != make_video_sample("test", 0).data


def test_new_kinds_are_scored_by_number_and_colour():
    assert scoring.is_correct("scenes", "red, then blue: 2 scenes.", "2")
    assert scoring.is_correct("text_time", "At 3.0 s.", "3")
    assert not scoring.is_correct("text_time", "At 4 s.", "3")
    assert scoring.is_correct("after_cut", "Blue.", "blue")
    assert not scoring.is_correct("after_cut", "It is red, then blue.", "blue")


def test_the_prior_gives_each_kind_its_most_common_answer():
    items = video_suite.video_items(30)
    summary = video_suite.prior(items)["summary"]
    for kind, accuracy in summary["accuracy_by_type"].items():
        answers = [i.answer for i in items if i.kind == kind]
        assert accuracy == max(answers.count(a) for a in answers) / len(answers)


@pytest.mark.slow
def test_the_suite_asks_with_and_without_the_video(tmp_path):
    items = video_suite.video_items(6)
    assert {i.kind for i in items} == {"scenes", "after_cut", "text_time"}
    state = build_state(Settings.from_env(dtype="float32"))
    with BackgroundServer(state) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        results = vision.run_suite(client, state.model.name, items, video_suite.CONDITIONS)
    results["prior"] = video_suite.prior(items)
    vision.write_report(results, tmp_path, "test")
    native, blind = results["native"]["summary"], results["blind"]["summary"]
    assert native["image_tokens_per_request"] > 100 and blind["image_tokens_per_request"] == 0
    report = (tmp_path / "report.md").read_text()
    assert "accuracy: text_time" in report and "POPE" not in report and "| prior |" in report
    assert json.loads((tmp_path / "report.json").read_text())["native"]["items"]
