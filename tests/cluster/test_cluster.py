"""``omniloom serve --cluster local`` beyond the shared client tests (``test_e2e.py`` runs those
against it too): cache-aware routing keeps a repeated image on the replica that holds its KV,
and an engine replica killed under load loses no request silently."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import numpy as np
import pytest

from tests.conftest import data_url, png_bytes, ray_driver

pytestmark = pytest.mark.slow
MODEL = "omniloom-smol"


def _image_request(url: str, question: str) -> dict:
    content = [  # the picture first: the prompts share everything up to the question
        {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
        {"type": "text", "text": question},
    ]
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 4,
        "temperature": 0,
        "perception": "native",
    }


def test_a_repeated_image_stays_on_the_replica_that_holds_its_kv(cluster_server):
    """Two media replicas: every repeat of an image, in new conversations, reuses its KV."""
    for seed in range(3):
        pixels = np.random.default_rng(seed).integers(0, 256, (90, 110, 3), dtype=np.uint8)
        url = data_url(png_bytes(pixels))
        details = []
        for question in ("What is it?", "Which colour?", "How many?", "Where?"):
            r = httpx.post(
                f"{cluster_server.url}/v1/chat/completions",
                json=_image_request(url, question),
                timeout=120,
            )
            assert r.status_code == 200, r.text
            details.append(r.json()["usage"]["prompt_tokens_details"])
        assert details[0]["cached_tokens"] < details[0]["image_tokens"]
        assert all(d["cached_tokens"] >= d["image_tokens"] for d in details[1:]), details


def _replica(name_part: str):
    import ray

    actors = ray.util.list_named_actors(all_namespaces=True)
    names = [a for a in actors if name_part in a["name"] and "SERVE_REPLICA" in a["name"]]
    assert names, actors
    return ray.get_actor(names[0]["name"], namespace=names[0]["namespace"])


def _long_request(url: str, i: int) -> httpx.Response:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Request {i}: count to a hundred."}],
        "max_tokens": 48,
        "ignore_eos": True,
        "temperature": 0,
    }
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=180)


def test_killing_an_engine_replica_under_load_loses_no_request(cluster_server):
    import ray

    with ray_driver(cluster_server), concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_long_request, cluster_server.url, i) for i in range(8)]
        concurrent.futures.wait(futures, timeout=1.5)
        assert not all(f.done() for f in futures)  # the kill lands mid-load
        ray.kill(_replica("engine-text"), no_restart=True)
        replies = [f.result(timeout=240) for f in futures]  # none hangs
    for r in replies:
        if r.status_code == 200:
            assert r.json()["usage"]["completion_tokens"] == 48
        else:
            assert r.status_code == 503, r.text
            assert "replica" in r.json()["error"]["message"]
    after = _long_request(cluster_server.url, 99)  # Ray Serve has replaced the replica
    assert after.status_code == 200, after.text


def test_a_dead_encoder_replica_is_replaced_and_no_image_request_hangs(cluster_server):
    import ray

    pixels = np.random.default_rng(7).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    url = data_url(png_bytes(pixels))
    with ray_driver(cluster_server):
        ray.kill(_replica("encoder"), no_restart=True)
        r = httpx.post(
            f"{cluster_server.url}/v1/chat/completions",
            json=_image_request(url, "What is it?"),
            timeout=180,
        )
    assert r.status_code in (200, 503), r.text  # retried on the replacement, or told to retry
    again = httpx.post(
        f"{cluster_server.url}/v1/chat/completions",
        json=_image_request(url, "Which colour?"),
        timeout=180,
    )
    assert again.status_code == 200, again.text


def test_every_deployment_reports_to_prometheus(cluster_server, cluster_metrics_port):
    """Ray exports each deployment's request counts and each engine replica's gauges; the
    ingress keeps omniloom's own counters, its KV gauge unknown (NaN): the KV is the replicas'."""
    _long_request(cluster_server.url, 7)
    wanted = {
        "serve_deployment_request_counter": ('deployment="ingress"', 'deployment="engine-text"'),
        "omniloom_replica_kv_cache_usage_ratio": ('deployment="engine-text"',),
        "omniloom_replica_running_sequences": ('deployment="engine-media"',),
    }
    deadline, text = time.monotonic() + 90, ""
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{cluster_metrics_port}/metrics", timeout=10).text
        if all(_exported(text, name, tags) for name, tags in wanted.items()):
            break
        time.sleep(3)
    else:
        raise AssertionError(f"per-deployment metrics missing: {text[:2000]}")
    usage = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ray_omniloom_replica_kv_cache_usage_ratio{")
    ]
    assert usage and all(0.0 <= u <= 1.0 for u in usage), usage
    ingress = httpx.get(f"{cluster_server.url}/metrics").text
    assert "omniloom_requests_total" in ingress
    assert "omniloom_kv_cache_usage_ratio NaN" in ingress


def _exported(text: str, name: str, tags: tuple[str, ...]) -> bool:
    lines = [line for line in text.splitlines() if name in line and not line.startswith("#")]
    return all(any(tag in line for line in lines) for tag in tags)


def test_the_deadline_holds_across_the_hops(tmp_path):
    """A request past the time limit is stopped on its engine replica too: the client gets the
    504 at the limit, and the replica is free for the next request at once."""
    from tests.conftest import CLUSTER_ENV, start_server

    # one sequence at a time: a generation left running would hold the next request back
    env = CLUSTER_ENV | {"OMNILOOM_LIMITS_REQUEST_TIMEOUT_S": "3", "OMNILOOM_ENGINE_MAX_BATCH": "1"}
    server = start_server(tmp_path / "server.log", "--cluster", "local", env=env)
    try:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Count to a thousand."}],
            "max_tokens": 2000,
            "ignore_eos": True,
        }
        started = time.monotonic()
        r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 504 and r.json()["error"]["code"] == "request_timeout"
        assert time.monotonic() - started < 10
        quick = body | {"max_tokens": 4}
        started = time.monotonic()
        assert httpx.post(f"{server.url}/v1/chat/completions", json=quick, timeout=60).is_success
        assert time.monotonic() - started < 10  # not behind the stopped one's ~40 s left
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=120)
