"""The video stage: its conversations are the server's prompts for the same video, their frames
point at the right feature rows, still images are rehearsed beside them, and a run can start
at the stage from an adapter of the stages before it (and not from one that had it)."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest
import torch
from safetensors.torch import save_file

from omniloom.config import Settings
from omniloom.eval.synthetic_video import make_video_sample
from omniloom.models.adapter import ADAPTER, adapter_state, read_adapter
from omniloom.models.registry import load_model
from omniloom.serving.requests import build_request_prompt
from omniloom.serving.schemas import ChatCompletionRequest
from omniloom.training.trainer import QUICK_RECIPE, Trainer, batch_loss
from omniloom.training.video import REHEARSAL, video_examples


@pytest.fixture(scope="module")
def model():
    return load_model(dtype="float32")


def _served(model, sample, question: str, video_first: bool) -> tuple[int, ...]:
    """The server's prompt for a request with the video and ``question``."""
    url = "data:video/mp4;base64," + base64.b64encode(sample.data).decode()
    parts = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": question}]
    parts = parts if video_first else parts[::-1]
    request = ChatCompletionRequest(
        model=model.name, messages=[{"role": "user", "content": parts}], perception="native"
    )
    return tuple(build_request_prompt(request, model, Settings()).token_ids)


def test_a_video_conversation_opens_with_the_servers_prompt_for_that_video(model):
    examples, features = video_examples(model, "val", 0, 4, seed=0)
    for index, example in enumerate(examples[:4]):
        sample = make_video_sample("val", index)
        opening = tuple(example.ids[: example.answer_spans[0][0]])
        served = {
            _served(model, sample, q.question, first)
            for q in sample.questions
            for first in (True, False)
        }
        assert opening in served
        frames_before = sum(make_video_sample("val", i).seconds for i in range(index))
        assert example.images == tuple(range(frames_before, frames_before + sample.seconds))
    frames = sum(make_video_sample("val", i).seconds for i in range(4))  # one a second
    assert features.shape[0] == frames + round(4 * REHEARSAL)


def test_frames_and_rehearsed_images_all_reach_the_loss(model):
    examples, features = video_examples(model, "val", 0, 8, seed=1)
    videos, stills = examples[:8], examples[8:]
    assert stills and all(len(e.images) == 1 for e in stills)
    assert all(len(e.images) >= 2 for e in videos)
    assert {row for e in examples for row in e.images} == set(range(features.shape[0]))
    assert torch.isfinite(batch_loss(model, examples[:4], features))


def _image_stages_adapter(path) -> None:
    """The installed adapter's weights as an adapter of the stages before ``video``."""
    state, metadata = read_adapter(ADAPTER)
    losses = {k: v for k, v in json.loads(metadata["val_loss"]).items() if k != "video"}
    save_file(state, str(path), metadata=metadata | {"val_loss": json.dumps(losses)})


@pytest.mark.slow
def test_a_run_starts_at_the_video_stage_from_an_adapter_of_the_stages_before(tmp_path):
    before = tmp_path / "five-stage.safetensors"
    _image_stages_adapter(before)
    fresh = load_model(dtype="float32", fresh_adapter=True)
    recipe = dataclasses.replace(QUICK_RECIPE, checkpoint_every=100)
    trainer = Trainer(fresh, recipe, tmp_path / "run", progress_bar=False)
    trainer.start_stage("video", before)
    start = adapter_state(fresh.vlm)
    assert torch.equal(
        start["projector.fc1.weight"], read_adapter(before)[0]["projector.fc1.weight"]
    )
    progress = trainer.run()
    video = [s.name for s in recipe.stages].index("video")
    assert [len(losses) for losses in progress.losses] == [0] * video + [4]
    assert {"instruct", "position", "video"} <= progress.val_loss.keys()  # earlier ones kept
    assert (tmp_path / "run" / "adapter.safetensors").exists()
    other = Trainer(fresh, recipe, tmp_path / "other", progress_bar=False)
    with pytest.raises(ValueError, match="no stage 'sound'"):
        other.start_stage("sound", before)
    with pytest.raises(ValueError, match="already went through stage 'video'"):
        other.start_stage("video", tmp_path / "run" / "adapter.safetensors")
