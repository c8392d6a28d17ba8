"""The Ray Serve application: an OpenAI ingress, an encoder pool and two LLM engine pools.

- ``ingress``: the same FastAPI routes as ``omniloom serve`` (media fetching, safety,
  preprocessing, token and cost accounting, the playground), with a ``RemoteEngine`` in place of
  the local engine;
- ``encoder``: runs the model spec's encoders and projector on one span per call, batched across
  concurrent requests with ``@serve.batch``; outputs are shared through ``EmbeddingCache`` (one
  named actor, keyed by the span's content hash and preprocessing), so an item is encoded once
  in the whole cluster while it stays cached;
- ``engine-media`` and ``engine-text``: LLM engine replicas (continuous batching, paged KV and
  prefix cache as in one process) for requests with and without media. Each is a multiplexed
  deployment whose "models" are affinity keys: Ray Serve routes a request to a replica that
  already holds its key. Each replica exports its KV usage, running sequences and queue depth
  (``EngineGauges``).

Every pool autoscales on in-flight requests per replica between ``min_replicas`` and
``max_replicas``, and drains in-flight requests before a replica is stopped.
"""

from __future__ import annotations

import asyncio
import threading
import time

import ray
import torch
from ray import serve
from ray.serve import metrics

from omniloom.cluster.remote_engine import Pools, RemoteEngine, portable
from omniloom.config import ClusterSettings, Settings
from omniloom.engine.encoder_cache import EncoderCache
from omniloom.engine.engine import Engine
from omniloom.engine.sequence import Done, Encoded, Failed, Job
from omniloom.runtime import load_served_model, server_state
from omniloom.serving.app import create_app

CACHE_ACTOR = "omniloom-embeddings"
NAMESPACE = "omniloom"
_INGRESS_CPUS = 0.1


@ray.remote(num_cpus=0)
class EmbeddingCache:
    """The cluster's encoder outputs by span key, bounded by bytes (least recent dropped)."""

    def __init__(self, max_bytes: int):
        self.cache = EncoderCache(max_bytes)

    def get(self, key: str) -> torch.Tensor | None:
        return self.cache.get(key)

    def put(self, key: str, embeddings: torch.Tensor) -> None:
        self.cache.put(key, embeddings)


def embedding_cache(settings: Settings):
    """The shared cache actor, created by whichever replica asks first."""
    return EmbeddingCache.options(
        name=CACHE_ACTOR, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote(settings.engine.encoder_cache_mb << 20)


class EncoderReplica:
    def __init__(self, settings: Settings):
        torch.set_num_threads(settings.cluster.replica_threads)
        self.net = load_served_model(settings).vlm
        self.cache = embedding_cache(settings)

    async def encode(self, span: tuple) -> Encoded:
        key, item = span
        cached = await self.cache.get.remote(key)
        if cached is not None:
            return Encoded(cached, cached=True)
        embeddings = await self._encode_batch(item)
        self.cache.put.remote(key, embeddings)
        return Encoded(embeddings, cached=False)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _encode_batch(self, items: list) -> list[torch.Tensor]:
        return await asyncio.to_thread(self._encode_now, items)

    def _encode_now(self, items: list) -> list[torch.Tensor]:
        with torch.inference_mode():
            return [e.clone() for e in self.net.encode(items)]


_REPLICA_GAUGES = (  # name, description, the engine method that reads it
    ("omniloom_replica_kv_cache_usage_ratio", "Fraction of KV blocks in use", "kv_usage"),
    ("omniloom_replica_running_sequences", "Sequences running", "running"),
    ("omniloom_replica_queue_depth", "Jobs waiting to run", "queue_depth"),
)


class EngineGauges:
    """A replica's engine gauges for Prometheus, refreshed every second: Ray exports them on its
    metrics port as ``ray_omniloom_replica_*`` with ``deployment`` and ``replica`` tags."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.readings = [
            (metrics.Gauge(name, description), getattr(engine, method))
            for name, description, method in _REPLICA_GAUGES
        ]
        threading.Thread(target=self._refresh, name="replica-gauges", daemon=True).start()

    def _refresh(self) -> None:
        while self.engine.health() is None:
            for gauge, read in self.readings:
                gauge.set(read())
            time.sleep(1.0)


class EngineReplica:
    def __init__(self, settings: Settings):
        model = load_served_model(settings)
        threads = settings.cluster.replica_threads
        self.engine = Engine(model, settings.engine, threads)
        self.gauges = EngineGauges(self.engine)

    async def hold(self, key: str) -> str:
        """Mark this replica as holding ``key``'s cached state (Ray routes its requests here)."""
        return key

    async def generate(self, prompt, params, keys: list[str], *encoded: Encoded):
        """The job's events, as the local engine emits them; leaving early cancels it."""
        key = serve.get_multiplexed_model_id()
        if key:
            await self.hold(key)
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        job = Job(prompt, params, emit=lambda e: loop.call_soon_threadsafe(events.put_nowait, e))
        job.encoded = dict(zip(keys, encoded, strict=True))
        self.engine.submit(job)
        try:
            while True:
                event = await events.get()
                if isinstance(event, Failed):
                    event = Failed(portable(event.error))
                yield event
                if isinstance(event, Done | Failed):
                    return
        finally:
            job.cancelled.set()

    def check_health(self) -> None:
        """Ray Serve's periodic check: a replica whose engine loop died is replaced."""
        problem = self.engine.health()
        if problem:
            raise RuntimeError(problem)


def _scaling(start: int, cluster: ClusterSettings) -> dict:
    return {
        "min_replicas": min(start, cluster.min_replicas),
        "initial_replicas": start,
        "max_replicas": max(start, cluster.max_replicas),
        "target_ongoing_requests": cluster.target_ongoing_requests,
        "upscale_delay_s": cluster.upscale_delay_s,
        "downscale_delay_s": cluster.downscale_delay_s,
    }


def _pool_options(name: str, start: int, settings: Settings) -> dict:
    return {
        "name": name,
        "autoscaling_config": _scaling(start, settings.cluster),
        "ray_actor_options": {"num_cpus": settings.cluster.replica_cpus},
        "max_ongoing_requests": 2 * settings.engine.max_batch,
        "graceful_shutdown_timeout_s": settings.limits.request_timeout_s,
        "health_check_period_s": 2,
    }


def _engine_deployment(settings: Settings, name: str, start: int):
    held = serve.multiplexed(max_num_models_per_replica=settings.cluster.sessions_per_replica)
    replica = type("EngineReplica", (EngineReplica,), {"hold": held(EngineReplica.hold)})
    return serve.deployment(replica).options(**_pool_options(name, start, settings))


class Ingress:
    """The OpenAI API over the pools: ``omniloom serve``'s own app around a ``RemoteEngine``."""

    def __init__(self, settings: Settings, encoder, media, text):
        model = load_served_model(settings)
        engine = RemoteEngine(model, Pools(encoder, media, text), settings.cluster)
        self.state = server_state(settings, model, engine)

    def __serve_build_asgi_app__(self):  # Ray Serve: the app, once the constructor has run
        return create_app(self.state)


def application(settings: Settings):
    """The bound application ``serve.run`` deploys (``omniloom serve --cluster``)."""
    cluster = settings.cluster
    encoder = serve.deployment(EncoderReplica).options(
        **_pool_options("encoder", cluster.encoder_replicas, settings)
    )
    media = _engine_deployment(settings, "engine-media", cluster.media_replicas)
    text = _engine_deployment(settings, "engine-text", cluster.text_replicas)
    ingress = serve.deployment(serve.ingress()(Ingress)).options(
        name="ingress", ray_actor_options={"num_cpus": _INGRESS_CPUS}
    )
    return ingress.bind(settings, encoder.bind(settings), media.bind(settings), text.bind(settings))
