"""Prometheus metrics of one core worker process, and the small HTTP endpoint that serves them.

`reference worker --metrics-port N` (env REFERENCE_WORKER_METRICS_PORT) answers `GET /metrics`
on the worker's own event loop (an asyncio server: no thread, closed with the worker). Every
label comes from a closed set: `action` is a registered action's name or `unknown`, `outcome`
is `success`, an error code of the contract, or `fail` for any other code, and `reason` one of
the worker's dead-letter reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

UNKNOWN_ACTION = "unknown"
SUCCESS = "success"
OTHER_FAILURE = "fail"
# The error codes of the contract (docs/contract.md §3) a worker writes in a Fail record.
ERROR_CODES = frozenset({"validation", "not_found", "conflict", "forbidden", "unknown_action",
                         "deadline_exceeded", "internal", "job_failed"})
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                     60, 300)
_REQUEST_LIMIT = 8192  # bytes of request line and headers read before giving up
_READ_TIMEOUT_S = 5.0


class WorkerMetrics:
    """The counters of one worker, in a registry of its own."""

    def __init__(self, actions: Collection[str] = (), *, dead_letter_reasons: Sequence[str] = (),
                 registry: CollectorRegistry | None = None, queue: str | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._actions = actions
        self.queue = queue  # set: the in-flight count is also this queue's unacked depth
        self.action_seconds = Histogram(
            "reference_worker_action_seconds",
            "Time an action ran in this worker (claimed to final record), by action",
            ["action"], buckets=_DURATION_BUCKETS, registry=self.registry)
        self.outcomes = Counter(
            "reference_worker_outcomes",
            "Final records this worker wrote, by action and outcome (success or error code)",
            ["action", "outcome"], registry=self.registry)
        self.redeliveries = Counter(
            "reference_worker_redeliveries",
            "Deliveries that were not the message's first (redelivered flag or delivery count)",
            registry=self.registry)
        self.claims_waited = Counter(
            "reference_worker_claims_waited",
            "Deliveries whose request another live holder had claimed, so this worker waited",
            registry=self.registry)
        self.in_flight = Gauge(
            "reference_worker_deliveries_in_flight",
            "Deliveries this worker holds now (taken, not yet settled)",
            registry=self.registry)
        self.dead_lettered = Counter(
            "reference_worker_dead_lettered", "Messages this worker dead-lettered, by reason",
            ["reason"], registry=self.registry)
        for reason in dead_letter_reasons:  # present at 0 from the start, for rate()
            self.dead_lettered.labels(reason)
        self.registry.register(_UnackedDepth(self))

    def action(self, name: str) -> str:
        """The `action` label of a message's action name."""
        return name if name in self._actions else UNKNOWN_ACTION

    @staticmethod
    def outcome(code: str | None) -> str:
        """The `outcome` label of a final record: None is a success."""
        if code is None:
            return SUCCESS
        return code if code in ERROR_CODES else OTHER_FAILURE

    def finished(self, action: str, code: str | None) -> None:
        self.outcomes.labels(self.action(action), self.outcome(code)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _UnackedDepth(Collector):
    """`reference_queue_depth{queue, state="unacked"}`: the deliveries this worker holds.

    AMQP tells a client the messages ready in a queue, not those delivered and unacknowledged;
    each worker knows exactly what it holds, so the queue's unacked depth is the sum over the
    workers (`sum by (queue) (reference_queue_depth{state="unacked"})`). The API's /metrics
    gives the `ready` depth of the queue and of its DLQ."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        queue = self._metrics.queue
        if queue is None:
            return
        held = sum(sample.value for family in self._metrics.in_flight.collect()
                   for sample in family.samples)
        family = GaugeMetricFamily(
            "reference_queue_depth",
            "Messages of the queue delivered to this worker and not yet acknowledged",
            labels=["queue", "state"])
        family.add_metric([queue, "unacked"], held)
        yield family


class MetricsServer:
    """`GET /metrics` over HTTP/1.0-style one-request connections, on the running loop."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int) -> None:
        self._metrics = metrics
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one the system chose for 0)."""
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Listen; raises OSError when the address cannot be bound."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port,
                                                  limit=_REQUEST_LIMIT)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=1.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            async with asyncio.timeout(_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, kind = self._answer(head)
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind.encode()
                         + b"\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        except Exception:  # never let one bad connection end the server
            log.exception("metrics endpoint: unexpected error")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[bytes, bytes, str]:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3:
            return b"400 Bad Request", b"bad request\n", "text/plain"
        method, target, _ = parts
        path = target.split(b"?", 1)[0]
        if path != b"/metrics":
            return b"404 Not Found", b"only /metrics here\n", "text/plain"
        if method != b"GET":
            return b"405 Method Not Allowed", b"GET only\n", "text/plain"
        return b"200 OK", self._metrics.render(), CONTENT_TYPE_LATEST
