"""Metrics against a real RabbitMQ and Redis: the queue depth the API reads, the worker's own
/metrics endpoint."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from reference.adapters.rabbitmq import RabbitMQBroker
from reference.api.metrics import ApiMetrics
from reference.messages import Principal, RequestMessage, encode
from tests.conftest import AMQP_URL, REDIS_URL, delete_queue_and_keys, require_server
from tests.helpers import eventually

pytestmark = pytest.mark.real


async def test_depth_reads_ready_messages_and_survives_a_missing_queue(unique: str) -> None:
    """Passive declare counts the ready messages of the queue and its DLQ; a queue that does not
    exist is left out and counted as an error, and the next read on the same broker works."""
    require_server(AMQP_URL, 5672)
    queue = f"depth-{unique}"
    broker = RabbitMQBroker(AMQP_URL)
    await broker.connect()
    metrics = ApiMetrics()
    try:
        await broker.declare_queue(queue)
        for n in range(2):
            await broker.publish(queue, b"{}", message_id=f"m{n}")
        depth = await metrics.read_depth(broker, (f"missing-{unique}", queue, queue + ".dlq"))
        assert depth == {queue: 2, queue + ".dlq": 0}
        text = metrics.render(depth).decode()
        assert f'reference_queue_depth{{queue="{queue}",state="ready"}} 2.0' in text
        assert f'reference_queue_depth_read_errors_total{{queue="missing-{unique}"}} 1.0' in text
        assert await metrics.read_depth(broker, (queue,)) == {queue: 2}
    finally:
        await metrics.close()
        await broker.close()
        await delete_queue_and_keys(queue, f"depth{unique}:")


async def _line(stream: asyncio.StreamReader, pattern: str, timeout_s: float) -> re.Match[str]:
    async with asyncio.timeout(timeout_s):
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError(f"the worker ended before printing {pattern!r}")
            found = re.search(pattern, raw.decode())
            if found:
                return found


async def test_worker_serves_its_metrics_and_closes_them_on_sigterm(unique: str) -> None:
    """`reference worker --metrics-port 0` prints its metrics address, counts the request it
    ran there, and exits 0 on SIGTERM with the port closed."""
    require_server(AMQP_URL, 5672)
    require_server(REDIS_URL, 6379)
    queue, prefix = f"wmetrics-{unique}", f"wm{unique}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERENCE_")}
    env.update(REFERENCE_BROKER_URL=AMQP_URL, REFERENCE_STORE_URL=REDIS_URL,
               REFERENCE_QUEUE=queue, REFERENCE_KEY_PREFIX=prefix,
               REFERENCE_SHUTDOWN_TIMEOUT_S="3")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reference", "worker", "--metrics-port", "0", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    broker = RabbitMQBroker(AMQP_URL)
    try:
        assert proc.stdout is not None
        found = await _line(proc.stdout, r"worker metrics on (http://\S+/metrics)", 30)
        url = found.group(1)
        await _line(proc.stdout, r"consuming", 30)
        await broker.connect()
        message = RequestMessage("listUsers", {}, f"rid-{unique}",
                                 principal=Principal("alice", ()))
        await broker.publish(queue, encode(message), message_id=f"rid-{unique}")
        sample = 'reference_worker_outcomes_total{action="listUsers",outcome="success"} 1.0'
        async with httpx.AsyncClient(timeout=5) as http:

            async def scraped() -> str | None:
                body = (await http.get(url)).text
                return body if sample in body else None

            text = await eventually(scraped, timeout=20, interval=0.05)
            assert "reference_worker_deliveries_in_flight 0.0" in text
            assert 'reference_worker_action_seconds_count{action="listUsers"} 1.0' in text
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 20) == 0
            with pytest.raises(httpx.ConnectError):
                await http.get(url)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await broker.close()
        await delete_queue_and_keys(queue, prefix)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _metrics_dirs(parent: Path) -> list[Path]:
    return list(parent.glob("reference-metrics-*"))


def _counter_writers(directory: Path) -> set[str]:
    """The pids of the processes that wrote counters into the multiprocess directory."""
    return {path.stem.rsplit("_", 1)[1] for path in directory.glob("counter_*.db")}


def _healthz_count(text: str) -> float:
    found = re.search(r'^reference_http_requests_total\{method="GET",route="healthz",'
                      r'status="200"\} (\S+)$', text, flags=re.M)
    return float(found.group(1)) if found else 0.0


async def test_serve_with_two_workers_reports_every_process(unique: str, tmp_path: Path) -> None:
    """Under `serve --workers 2` every scrape, whichever process answers it, counts the requests
    of both; the multiprocess directory exists while serving and is gone after."""
    require_server(AMQP_URL, 5672)
    require_server(REDIS_URL, 6379)
    queue, prefix, port = f"mpmetrics-{unique}", f"mp{unique}:", _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("REFERENCE_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(REFERENCE_BROKER_URL=AMQP_URL, REFERENCE_STORE_URL=REDIS_URL,
               REFERENCE_QUEUE=queue, REFERENCE_KEY_PREFIX=prefix, REFERENCE_PORT=str(port),
               REFERENCE_JWT_SECRET="s" * 32, TMPDIR=str(tmp_path))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reference", "serve", "--workers", "2", env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async def up() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"{base}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(up, timeout=60, interval=0.1)
        dirs = _metrics_dirs(tmp_path)
        assert len(dirs) == 1
        before = None
        for _ in range(3):  # each its own connection: whichever process takes it
            async with httpx.AsyncClient(timeout=5) as http:
                count = _healthz_count((await http.get(f"{base}/metrics")).text)
            assert before is None or count == before
            before = count
        assert before is not None
        for _ in range(40):
            async with httpx.AsyncClient(timeout=5) as http:
                assert (await http.get(f"{base}/healthz")).status_code == 200
        assert len(_counter_writers(dirs[0])) == 2  # both Sanic workers write there
        for _ in range(6):
            async with httpx.AsyncClient(timeout=5) as http:
                text = (await http.get(f"{base}/metrics")).text
            assert _healthz_count(text) == before + 40
            assert f'reference_queue_depth{{queue="{queue}",state="ready"}} 0.0' in text
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert _metrics_dirs(tmp_path) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await delete_queue_and_keys(queue, prefix)
