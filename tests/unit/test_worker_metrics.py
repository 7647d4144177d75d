"""The worker's own metrics (reference/worker_metrics.py) and the endpoint that serves them."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from reference.cli import _parser, _settings, _start_metrics_server, main
from reference.errors import StartupError
from reference.messages import Principal, RequestMessage, encode
from reference.settings import Settings
from reference.worker import CoreWorker, WorkerConfig
from reference.worker_metrics import MetricsServer, WorkerMetrics
from tests.helpers import eventually, final_record
from tests.unit.test_worker import Rig


def _value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` of a text exposition, 0 when absent."""
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (re.escape("{" + inner + "}") if labels else "") + r" (\S+)$"
    found = re.search("^" + pattern, text, flags=re.M)
    return float(found.group(1)) if found else 0.0


def _text(rig: Rig) -> str:
    return rig.worker.metrics.render().decode()


class _Delivery:
    """A delivery handed to the worker by hand, with the redelivery marks we choose."""

    def __init__(self, body: bytes, *, redelivered: bool = False, delivery_count: int = 1):
        self.body = body
        self.redelivered = redelivered
        self.delivery_count = delivery_count
        self.message_id = None
        self.reply_to: str | None = None
        self.headers: dict[str, str] = {}
        self.settled: list[str] = []

    async def ack(self) -> None:
        self.settled.append("ack")

    async def reject(self, *, requeue: bool) -> None:
        self.settled.append("requeue" if requeue else "dead-letter")


def _message(action: str, params: dict[str, object], rid: str) -> bytes:
    return encode(RequestMessage(action, params, rid,
                                 principal=Principal("alice", ("users:write",))))


async def test_success_and_fail_outcomes_by_action(rig: Rig) -> None:
    """A final record is counted under its action and outcome, a run in the duration histogram."""
    await rig.publish("createUser", {"name": "Ada", "email": "ada@example.com"}, "ok")
    await rig.publish("getUser", {"id": 424242}, "missing")
    await rig.publish("runJob", {"duration_ms": 0, "fail": True}, "failed")
    for rid in ("ok", "missing", "failed"):
        await final_record(rig.services.results, rid)
    await eventually(rig.queue_drained)
    text = _text(rig)
    assert _value(text, "reference_worker_outcomes_total",
                  action="createUser", outcome="success") == 1
    assert _value(text, "reference_worker_outcomes_total",
                  action="getUser", outcome="not_found") == 1
    assert _value(text, "reference_worker_outcomes_total",
                  action="runJob", outcome="job_failed") == 1
    assert _value(text, "reference_worker_action_seconds_count", action="createUser") == 1
    assert _value(text, "reference_worker_action_seconds_count", action="runJob") == 1


async def test_unknown_action_is_one_label_not_the_message_s_name(rig: Rig) -> None:
    """An action nobody registered is counted as action="unknown", so a producer cannot grow the
    label set."""
    for n in range(3):
        await rig.publish(f"madeUp{n}", {}, f"u{n}")
        await final_record(rig.services.results, f"u{n}")
    text = _text(rig)
    assert _value(text, "reference_worker_outcomes_total",
                  action="unknown", outcome="unknown_action") == 3
    assert "madeUp" not in text


def test_labels_come_from_closed_sets() -> None:
    """Codes outside the contract's set become outcome="fail"; unregistered names "unknown"."""
    metrics = WorkerMetrics({"greet"})
    assert metrics.action("greet") == "greet"
    assert metrics.action("other") == "unknown"
    assert metrics.outcome(None) == "success"
    assert metrics.outcome("not_found") == "not_found"
    assert metrics.outcome("my_own_code") == "fail"


async def test_dead_lettered_by_reason(rig: Rig) -> None:
    """A poison message is counted under reason="poison"; the other reasons start at 0."""
    await rig.publish_raw(b"not json at all")
    await eventually(lambda: _async(len(rig.memory.broker.queues["work.dlq"].ready) == 1))
    text = _text(rig)
    assert _value(text, "reference_worker_dead_lettered_total", reason="poison") == 1
    assert "reference_worker_dead_lettered_total{reason=\"delivery_limit\"} 0.0" in text


async def test_redeliveries_count_the_flag_and_the_delivery_count(rig: Rig) -> None:
    """A delivery flagged redelivered, or with a delivery count above 1, is a redelivery; a
    first delivery is not."""
    first = _Delivery(_message("listUsers", {}, "r-first"))
    flagged = _Delivery(_message("listUsers", {}, "r-flag"), redelivered=True, delivery_count=2)
    counted = _Delivery(_message("listUsers", {}, "r-count"), delivery_count=3)
    for delivery in (first, flagged, counted):
        await rig.worker.handle(delivery)
        assert delivery.settled == ["ack"]
    assert _value(_text(rig), "reference_worker_redeliveries_total") == 2


async def test_in_flight_and_claims_waited_on(rig: Rig) -> None:
    """Two copies of one running request: both are in flight (and the queue's unacked depth),
    the second waits on the claim."""
    body = _message("runJob", {"duration_ms": 300, "steps": 2}, "twice")
    await rig.services.broker.publish(rig.settings.queue, body, message_id="a")
    await rig.services.broker.publish(rig.settings.queue, body, message_id="b")
    await eventually(lambda: _async(
        _value(_text(rig), "reference_worker_claims_waited_total") == 1))
    assert _value(_text(rig), "reference_worker_deliveries_in_flight") == 2
    queue = rig.settings.queue
    assert _value(_text(rig), "reference_queue_depth", queue=queue, state="unacked") == 2
    await final_record(rig.services.results, "twice")
    await eventually(lambda: _async(
        _value(_text(rig), "reference_worker_deliveries_in_flight") == 0))
    assert _value(_text(rig), "reference_queue_depth", queue=queue, state="unacked") == 0
    text = _text(rig)
    assert _value(text, "reference_worker_outcomes_total", action="runJob", outcome="success") == 1
    assert _value(text, "reference_worker_action_seconds_count", action="runJob") == 1


async def _async(value: bool) -> bool:
    return value


# --- the endpoint -----------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    metrics = WorkerMetrics({"greet"})
    metrics.finished("greet", None)
    srv = MetricsServer(metrics, "127.0.0.1", 0)
    await srv.start()
    yield srv
    await srv.close()


async def test_endpoint_serves_the_text_format(server: MetricsServer) -> None:
    """GET /metrics answers 200 in the Prometheus text format with the worker's samples."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        r = await http.get("/metrics?x=1")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'reference_worker_outcomes_total{action="greet",outcome="success"} 1.0' in r.text


async def test_endpoint_refuses_other_paths_methods_and_garbage(server: MetricsServer) -> None:
    """Other paths are 404, other methods 405, a malformed request line 400."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        assert (await http.get("/")).status_code == 404
        assert (await http.post("/metrics")).status_code == 405
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"nonsense\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()


async def test_a_silent_client_does_not_block_a_scrape(server: MetricsServer) -> None:
    """A connection that never sends its request does not hold up another one."""
    _, silent = await asyncio.open_connection("127.0.0.1", server.port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        r = await asyncio.wait_for(http.get("/metrics"), 2.0)
    assert r.status_code == 200
    silent.close()


async def test_close_stops_listening_and_drops_open_connections() -> None:
    """After close() the port refuses connections and a pending one was closed."""
    srv = MetricsServer(WorkerMetrics(), "127.0.0.1", 0)
    await srv.start()
    port = srv.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(srv.close(), 3.0)
    assert await asyncio.wait_for(reader.read(), 2.0) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


# --- configuration ----------------------------------------------------------------------------


def test_flag_and_environment_set_the_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--metrics-port` and REFERENCE_WORKER_METRICS_PORT both set worker_metrics_port."""
    monkeypatch.delenv("REFERENCE_WORKER_METRICS_PORT", raising=False)
    assert _settings(_parser().parse_args(["worker"])).worker_metrics_port is None
    args = _parser().parse_args(["worker", "--metrics-port", "9101"])
    assert _settings(args).worker_metrics_port == 9101
    env = Settings.from_env({"REFERENCE_WORKER_METRICS_PORT": "9102"})
    assert env.worker_metrics_port == 9102


def test_a_port_out_of_range_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A metrics port that is no TCP port is refused before anything connects."""
    code = main(["worker", "--broker-url", "amqp://127.0.0.1:1/", "--store-url",
                 "redis://127.0.0.1:1/0", "--metrics-port", "70000"])
    assert code == 2
    assert "--metrics-port 70000 is not a TCP port" in capsys.readouterr().err


async def test_a_port_in_use_is_a_startup_error() -> None:
    """A metrics port another socket holds ends the start with one StartupError line."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        settings = Settings(worker_metrics_port=port)
        worker = CoreWorker(None, None, None, WorkerConfig())  # type: ignore[arg-type]
        with pytest.raises(StartupError, match=f"cannot serve worker metrics on 127.0.0.1:{port}"):
            await _start_metrics_server(worker, settings)
