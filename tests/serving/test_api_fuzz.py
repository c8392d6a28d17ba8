"""Schema-driven fuzzing of the HTTP API (schemathesis): whatever body the OpenAPI schema allows,
or nearly allows, the server answers without a 5xx and keeps serving.

The model name is pinned to the served one in generated bodies, so the fuzzing reaches past the
model check into prompt building, sampling limits and structured-output compilation. Generation
is capped at a few tokens and every URL fetch is refused by the domain allow-list, so each case
stays fast and offline.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from omniloom.config import Limits, Settings
from omniloom.engine.engine import Engine
from omniloom.runtime import BackgroundServer
from omniloom.serving.app import openapi_schema
from omniloom.serving.state import ServerState

pytestmark = pytest.mark.slow
STATUSES: list[int] = []


schema = schemathesis.openapi.from_dict(openapi_schema())


@pytest.fixture(scope="module")
def server_url(default_model):
    """The real server on loopback, with few tokens per answer and no fetching allowed."""
    limits = Limits(max_completion_tokens=4, fetch_allow_domains="fuzz.invalid")
    config = dataclasses.replace(Settings(), limits=limits)
    state = ServerState(config, default_model, Engine(default_model, config.engine))
    with BackgroundServer(state) as server:
        yield server.url


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_body_makes_the_server_fail(case, server_url):
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = "omniloom-smol"
    response = case.call(base_url=server_url)
    STATUSES.append(response.status_code)
    failure = f"{case.method} {case.path} -> {response.status_code}: {response.text}"
    assert response.status_code < 500, failure
    if response.status_code >= 400:
        assert "error" in response.json() and response.json()["error"]["message"]


def test_fuzzing_reached_generation():
    """Some fuzzed chat bodies were valid enough to be served, so the deep paths ran too."""
    if not STATUSES:
        pytest.skip("runs after the fuzzing test, in the same session")
    print("statuses:", sorted(Counter(STATUSES).items()))
    assert STATUSES.count(200) >= 5 and any(s >= 400 for s in STATUSES)
