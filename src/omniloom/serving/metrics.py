"""Prometheus metrics for the server, in a registry of their own (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "omniloom_requests",
            "HTTP API requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "omniloom_request_seconds",
            "End-to-end request latency",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "omniloom_time_to_first_token_seconds",
            "Time from request to first generated token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "omniloom_prompt_tokens",
            "Prompt tokens processed, by modality",
            ["modality"],
            registry=r,
        )
        self.completion_tokens = Counter(
            "omniloom_completion_tokens", "Completion tokens generated", registry=r
        )
        self.encoder_seconds = Histogram(
            "omniloom_encoder_seconds",
            "Time spent in media encoders per request",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.encoder_items = Counter(
            "omniloom_encoder_items",
            "Media items run through an encoder, by modality",
            ["modality"],
            registry=r,
        )
        self.queue_depth = Gauge("omniloom_queue_depth", "Jobs waiting for the engine", registry=r)
