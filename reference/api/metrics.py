"""Prometheus metrics of one API process, in a registry of its own.

Under `reference serve --workers N` (N > 1) the serve command sets PROMETHEUS_MULTIPROC_DIR
before the Sanic workers start; each process then writes its values to files there, and
/metrics, whichever process answers it, renders all of them through a MultiProcessCollector.

The queue depth is not stored: the process that answers a scrape reads it from the broker
(AMQP passive declare: messages ready, not those delivered and unacknowledged) and renders it
with the rest. A queue whose count could not be read within DEPTH_TIMEOUT_S is left out of that
scrape, and `reference_queue_depth_read_errors_total` counts the miss.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from reference.ports import MessageBroker

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DEPTH_TIMEOUT_S = 1.0  # the longest one scrape waits for the depth of one queue
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, when `serve` set one."""
    return os.environ.get(MULTIPROC_ENV) or None


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
            registry=self.registry, multiprocess_mode="livesum",
        )
        self.depth_errors = Counter(
            "reference_queue_depth_read_errors",
            "Scrapes that could not read a queue's depth from the broker (left out of them)",
            ["queue"], registry=self.registry,
        )
        # One read per queue at a time: a scrape that times out leaves its read running (it
        # is bounded by the adapter's own timeout) and the next scrape waits on that one.
        self._reads: dict[str, asyncio.Task[int]] = {}

    async def read_depth(self, broker: MessageBroker, queues: Sequence[str],
                         timeout_s: float = DEPTH_TIMEOUT_S) -> dict[str, int]:
        """The ready count of each queue that answered within `timeout_s`, one after the
        other (a failed passive declare closes the channel the next one would use)."""
        depth: dict[str, int] = {}
        for queue in queues:
            read = self._reads.get(queue)
            if read is None or read.done():
                read = asyncio.get_running_loop().create_task(
                    broker.message_count(queue), name=f"queue depth {queue}")
                read.add_done_callback(_consume_exception)
                self._reads[queue] = read
            try:
                depth[queue] = await asyncio.wait_for(asyncio.shield(read), timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception:  # broker down, queue missing, timeout: left out, counted
                self.depth_errors.labels(queue).inc()
        return depth

    async def close(self) -> None:
        """Cancel depth reads still running (the app is stopping); in multiprocess mode, drop
        this process's live gauges from the shared directory."""
        for read in self._reads.values():
            read.cancel()
            with contextlib.suppress(BaseException):
                await read
        self._reads.clear()
        if multiprocess_dir() is not None:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def render(self, depth: dict[str, int] | None = None) -> bytes:
        """The text format: this process's metrics (all processes' in multiprocess mode) and
        the queue depth just read."""
        source: Collector = self.registry
        if multiprocess_dir() is not None:
            source = CollectorRegistry()
            MultiProcessCollector(source)  # type: ignore[no-untyped-call]
        return generate_latest(_Scrape(source, _depth_family(depth or {})))


class _Scrape(Collector):
    def __init__(self, source: Collector, *extra: Metric) -> None:
        self._source = source
        self._extra = extra

    def collect(self) -> Iterable[Metric]:
        yield from self._source.collect()
        yield from self._extra


def _depth_family(depth: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "reference_queue_depth",
        "Messages ready in the queue (AMQP passive declare; unacknowledged ones not counted)",
        labels=["queue", "state"])
    for queue, count in depth.items():
        family.add_metric([queue, "ready"], count)
    return family


def _consume_exception(task: asyncio.Task[int]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed read is counted, not logged as unretrieved


__all__ = ["CONTENT_TYPE", "DEPTH_TIMEOUT_S", "ApiMetrics", "multiprocess_dir"]
