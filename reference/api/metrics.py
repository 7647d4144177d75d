"""Prometheus metrics of one API process, in a registry of its own."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass
class ApiMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "reference_http_requests", "HTTP requests answered, by route and status",
            ["route", "method", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "reference_request_seconds", "End-to-end latency of requests that waited on a result",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.waiting = Gauge(
            "reference_inflight_waits", "Requests waiting for their final record now",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "ApiMetrics"]
