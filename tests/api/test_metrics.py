"""The API's /metrics: the queue depth read from the broker at scrape time."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reference.api.metrics import MULTIPROC_ENV, ApiMetrics
from reference.cli import _multiprocess_metrics
from reference.errors import BrokerUnavailable
from reference.fakes.pipeline import running_pipeline
from tests.api.conftest import api_settings


def _depth(text: str, queue: str) -> float | None:
    found = re.search(r'^reference_queue_depth\{queue="' + re.escape(queue)
                      + r'",state="ready"\} (\S+)$', text, flags=re.M)
    return float(found.group(1)) if found else None


def _errors(text: str, queue: str) -> float:
    found = re.search(r'^reference_queue_depth_read_errors_total\{queue="' + re.escape(queue)
                      + r'"\} (\S+)$', text, flags=re.M)
    return float(found.group(1)) if found else 0.0


async def test_depth_counts_ready_messages_of_the_queue_and_its_dlq() -> None:
    """With no worker consuming, /metrics shows the messages published as ready, and the DLQ's."""
    settings = api_settings(queue="metrics-depth")
    async with running_pipeline(settings, workers=0) as pipe:
        text = (await pipe.client.get("/metrics")).text
        assert _depth(text, "metrics-depth") == 0
        assert _depth(text, "metrics-depth.dlq") == 0
        for n in range(3):
            await pipe.broker.publish("metrics-depth", b"{}", message_id=f"m{n}")
        await pipe.broker.publish("metrics-depth.dlq", b"{}", message_id="d")
        text = (await pipe.client.get("/metrics")).text
        assert _depth(text, "metrics-depth") == 3
        assert _depth(text, "metrics-depth.dlq") == 1
        assert 'state="unacked"' not in text


async def test_depth_follows_a_dead_lettered_message() -> None:
    """A poison message the worker dead-letters leaves the queue and shows in the DLQ's depth."""
    settings = api_settings(queue="metrics-dlq")
    async with running_pipeline(settings, workers=1) as pipe:
        await pipe.broker.publish("metrics-dlq", b"not json", message_id="poison")
        deadline = time.monotonic() + 5
        while True:
            text = (await pipe.client.get("/metrics")).text
            if _depth(text, "metrics-dlq.dlq") == 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert _depth(text, "metrics-dlq.dlq") == 1
        assert _depth(text, "metrics-dlq") == 0


class _FailingBroker:
    def __init__(self) -> None:
        self.calls = 0

    async def message_count(self, queue: str) -> int:
        self.calls += 1
        raise BrokerUnavailable("down")


class _HangingBroker:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def message_count(self, queue: str) -> int:
        self.calls += 1
        await self.release.wait()
        return 7


async def test_a_failed_read_leaves_the_series_out_and_counts_the_miss() -> None:
    """A broker that fails the passive declare gives no depth series and one error per scrape."""
    metrics = ApiMetrics()
    broker = _FailingBroker()
    depth = await metrics.read_depth(broker, ("q", "q.dlq"))  # type: ignore[arg-type]
    assert depth == {}
    text = metrics.render(depth).decode()
    assert _depth(text, "q") is None
    assert _errors(text, "q") == 1 and _errors(text, "q.dlq") == 1
    await metrics.close()


async def test_a_hanging_read_is_bounded_and_not_started_twice() -> None:
    """A silent broker costs a scrape the timeout, not more, and a second scrape waits on the
    read already running instead of piling up another."""
    metrics = ApiMetrics()
    broker = _HangingBroker()
    started = time.monotonic()
    assert await metrics.read_depth(broker, ("q",), timeout_s=0.1) == {}  # type: ignore[arg-type]
    assert time.monotonic() - started < 1.0
    assert await metrics.read_depth(broker, ("q",), timeout_s=0.1) == {}  # type: ignore[arg-type]
    assert broker.calls == 1
    broker.release.set()
    depth = await metrics.read_depth(broker, ("q",), timeout_s=1.0)  # type: ignore[arg-type]
    assert depth == {"q": 7}
    assert _depth(metrics.render(depth).decode(), "q") == 7
    assert _errors(metrics.render(depth).decode(), "q") == 2
    await metrics.close()


async def test_close_cancels_a_read_still_running() -> None:
    """Stopping the app cancels a depth read that has not come back."""
    metrics = ApiMetrics()
    broker = _HangingBroker()
    await metrics.read_depth(broker, ("q",), timeout_s=0.05)  # type: ignore[arg-type]
    reads = list(metrics._reads.values())
    await metrics.close()
    assert reads and all(read.cancelled() for read in reads)


# --- several Sanic workers: prometheus_client's multiprocess mode ------------------------------

_ONE_PROCESS = """
import sys
from reference.api.metrics import ApiMetrics
metrics = ApiMetrics()
metrics.requests.labels("healthz", "GET", "200").inc(int(sys.argv[1]))
metrics.waiting.inc()
"""


def test_render_adds_up_every_process_in_multiprocess_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, /metrics renders the sum of what each process wrote."""
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    for count in ("2", "5"):
        subprocess.run([sys.executable, "-c", _ONE_PROCESS, count], env=env, check=True,
                       timeout=60)
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    text = ApiMetrics().render({"q": 4}).decode()
    assert ('reference_http_requests_total{method="GET",route="healthz",status="200"} 7.0'
            in text)
    assert "reference_inflight_waits 2.0" in text
    assert _depth(text, "q") == 4


def test_serve_sets_a_fresh_multiprocess_dir_only_for_several_workers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --workers 2` gets a new directory in the environment, removed (and the variable
    restored) when serving ends; one worker gets none."""
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with _multiprocess_metrics(1):
        assert MULTIPROC_ENV not in os.environ
    with _multiprocess_metrics(2):
        directory = Path(os.environ[MULTIPROC_ENV])
        assert directory.is_dir() and not any(directory.iterdir())
        (directory / "counter_1.db").write_bytes(b"")
    assert not directory.exists()
    assert MULTIPROC_ENV not in os.environ
    monkeypatch.setenv(MULTIPROC_ENV, "/elsewhere")
    with _multiprocess_metrics(3):
        assert os.environ[MULTIPROC_ENV] != "/elsewhere"
    assert os.environ[MULTIPROC_ENV] == "/elsewhere"
