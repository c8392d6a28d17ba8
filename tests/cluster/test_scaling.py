"""Autoscaling on the engine pools' queues. Up: requests queued beyond a replica's target add
one. Down: when a pool's queue asks for fewer replicas, the one that stops takes no new requests
and finishes those it holds (Ray Serve's graceful shutdown, bounded by the request time limit),
so a scale-down loses no request and cuts none short."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time

import httpx
import pytest

from tests.conftest import CLUSTER_ENV, ray_driver, start_server

pytestmark = pytest.mark.slow
MODEL = "omniloom-smol"
TOKENS = 800  # about 30 s on two cores: each scaling step happens while every request runs
DRAINING = {
    "OMNILOOM_CLUSTER_MEDIA_REPLICAS": "1",
    "OMNILOOM_CLUSTER_TEXT_REPLICAS": "2",
    "OMNILOOM_CLUSTER_MIN_REPLICAS": "1",
    "OMNILOOM_CLUSTER_TARGET_ONGOING_REQUESTS": "64",  # one replica is always enough
    "OMNILOOM_CLUSTER_DOWNSCALE_DELAY_S": "15",  # from the replicas start: requests begin first
}


GROWING = {
    "OMNILOOM_CLUSTER_MEDIA_REPLICAS": "1",
    "OMNILOOM_CLUSTER_TEXT_REPLICAS": "1",
    "OMNILOOM_CLUSTER_MIN_REPLICAS": "1",
    "OMNILOOM_CLUSTER_TARGET_ONGOING_REQUESTS": "1",  # four requests ask for four replicas
    "OMNILOOM_CLUSTER_UPSCALE_DELAY_S": "1",
}


@contextlib.contextmanager
def cluster(tmp_path, layout: dict):
    """A ``--cluster local`` server with this pool layout, and a Ray driver attached to it."""
    server = start_server(tmp_path / "server.log", "--cluster", "local", env=CLUSTER_ENV | layout)
    try:
        with ray_driver(server):
            yield server
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=120)


def _text_replicas() -> dict:
    from ray import serve

    application = serve.status().applications["omniloom"]
    return dict(application.deployments["engine-text"].replica_states)


def _long_request(url: str, i: int) -> tuple[httpx.Response, float]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Story {i}: tell it slowly."}],
        "max_tokens": TOKENS,
        "ignore_eos": True,
        "temperature": 0,
    }
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300)
    return reply, time.monotonic()


def _watch(futures, every: float = 0.25) -> list[tuple[float, dict]]:
    """The text pool's replica states over time, until every request has its reply."""
    timeline = []
    while not all(f.done() for f in futures):
        timeline.append((time.monotonic(), _text_replicas()))
        time.sleep(every)
    timeline.append((time.monotonic(), _text_replicas()))
    return timeline


def test_a_queue_beyond_the_target_adds_a_replica(tmp_path):
    with cluster(tmp_path, GROWING) as server:
        assert _text_replicas() == {"RUNNING": 1}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_long_request, server.url, i) for i in range(4)]
            timeline = _watch(futures)
        replies = [f.result() for f in futures]
    assert any(states.get("RUNNING") == 2 for _, states in timeline), timeline  # at the ceiling
    for reply, _ in replies:
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == TOKENS


def test_scale_down_drains_the_replica_it_stops(tmp_path):
    with cluster(tmp_path, DRAINING) as server:
        assert _text_replicas().get("RUNNING") == 2
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(_long_request, server.url, i) for i in range(4)]
            timeline = _watch(futures)
        replies = [f.result() for f in futures]
        deadline = time.monotonic() + 60
        while _text_replicas() != {"RUNNING": 1} and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _text_replicas() == {"RUNNING": 1}
    for reply, _ in replies:
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == TOKENS  # none cut short
        assert reply.json()["choices"][0]["finish_reason"] == "length"
    stopping = [t for t, states in timeline if states.get("STOPPING")]
    assert stopping, timeline  # the scale-down happened while the requests ran
    first_done = min(done for _, done in replies)
    # two replicas share four requests, so the stopped one held some: it stayed until they ended
    assert max(stopping) >= first_done - 2.0, (stopping, first_done)
    assert min(stopping) < first_done - 5.0, (stopping, first_done)  # it drained, not raced
