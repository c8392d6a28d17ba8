"""Prometheus metrics for the server, in a registry of their own (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = self._counter(
            "requests", "HTTP API requests by endpoint and status", "endpoint", "status"
        )
        self.request_seconds = self._latency("request_seconds", "End-to-end latency", "endpoint")
        self.ttft = self._latency(
            "time_to_first_token_seconds", "Time from request to first generated token"
        )
        self.prompt_tokens = self._counter(
            "prompt_tokens", "Prompt tokens processed, by modality", "modality"
        )
        self.completion_tokens = self._counter("completion_tokens", "Completion tokens generated")
        self.encoder_seconds = self._latency(
            "encoder_seconds", "Time spent in media encoders per request"
        )
        self.encoder_items = self._counter(
            "encoder_items", "Media items run through an encoder, by modality", "modality"
        )
        self.encoder_cache_hits = self._counter(
            "encoder_cache_hits",
            "Media items served from the encoder cache, by modality",
            "modality",
        )
        self.perception_images = self._counter(
            "perception_images",
            "Images by the path they took to the model (native, cascade, hybrid; auto picks one)",
            "path",
        )
        self.skipped_stages = self._counter(
            "skipped_stages",
            "Images answered without a stage that failed on them (ocr, labels, image_safety)",
            "stage",
        )
        self.cached_prompt_tokens = self._counter(
            "cached_prompt_tokens", "Prompt tokens whose KV came from the prefix cache"
        )
        self.preemptions = self._counter(
            "preemptions", "Times a sequence gave back its KV blocks to be recomputed later"
        )
        self.timeouts = self._counter(
            "request_timeouts",
            "Requests stopped at the per-request time limit, by whether they had started",
            "phase",
        )
        self.queue_depth = self._gauge("queue_depth", "Requests waiting for the engine")
        self.running = self._gauge("running_sequences", "Sequences in the running batch")
        self.kv_usage = self._gauge("kv_cache_usage_ratio", "Fraction of KV blocks in use")

    def _gauge(self, name: str, doc: str) -> Gauge:
        return Gauge(f"omniloom_{name}", doc, registry=self.registry)

    def _counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(f"omniloom_{name}", doc, labels, registry=self.registry)

    def _latency(self, name: str, doc: str, *labels: str) -> Histogram:
        return Histogram(
            f"omniloom_{name}", doc, labels, buckets=_LATENCY_BUCKETS, registry=self.registry
        )
