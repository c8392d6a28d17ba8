"""The optional image safety classifier (open_nsfw on onnxruntime) and its policies, end to end."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from PIL import Image
from skimage import data

from omniloom.config import Settings
from omniloom.engine.engine import Engine
from omniloom.perception.image_safety import ContentPolicyViolation, ImageSafety, SafetyReport
from omniloom.runtime import BackgroundServer
from omniloom.serving.state import ServerState
from tests.conftest import data_url

MODEL = "omniloom-smol"


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_ordinary_photographs_score_low(name):
    safety = ImageSafety("flag", threshold=0.8)
    assert 0.0 <= safety.score(Image.fromarray(getattr(data, name)())) < 0.2


def test_block_policy_refuses_at_the_threshold_and_reports_scores():
    image = Image.fromarray(data.coffee())
    report = SafetyReport(0.0)
    with pytest.raises(ContentPolicyViolation, match="content policy") as err:
        ImageSafety("block", threshold=0.0).check(image, "messages[0].content[1]", report)
    assert err.value.code == "content_policy_violation"
    assert err.value.param == "messages[0].content[1]"
    assert len(report.scores) == 1 and report.flagged
    with pytest.raises(ValueError, match="policy"):
        ImageSafety("sometimes", threshold=0.5)


def _ask(url: str, jpeg: bytes) -> httpx.Response:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": data_url(jpeg, "image/jpeg")}},
    ]
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("policy", "threshold", "status", "header"),
    [("flag", 0.0, 200, "flagged"), ("block", 0.8, 200, "none"), ("block", 0.0, 400, None)],
)
def test_policies_through_the_server(
    default_model, astronaut_jpeg, policy, threshold, status, header
):
    settings = dataclasses.replace(
        Settings(), image_safety=policy, image_safety_threshold=threshold
    )
    state = ServerState(settings, default_model, Engine(default_model, settings.engine))
    with BackgroundServer(state) as server:
        reply = _ask(server.url, astronaut_jpeg)
        assert reply.status_code == status
        assert reply.headers.get("X-Omniloom-Image-Safety") == header
        if status == 200:
            safety = reply.json()["media_safety"]["image_safety"]
            assert safety["threshold"] == threshold and len(safety["scores"]) == 1
        else:
            error = reply.json()["error"]
            assert error["code"] == "content_policy_violation"
            assert error["param"] == "messages[0].content[1]"
        assert httpx.get(f"{server.url}/health").status_code == 200
