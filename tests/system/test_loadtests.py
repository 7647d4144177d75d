"""`python -m loadtests.run` does what SPEC §6 says, in one command, for product and baseline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AMQP_URL, IN_CI, REDIS_URL, require_server

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", [["--completion", "push"], ["--baseline"]],
                         ids=["push", "baseline"])
def test_one_command_gives_the_report(tmp_path: Path, mode: list[str]) -> None:
    """A short run writes locust's CSV and HTML, a PNG plot and a complete summary.json,
    with requests served and none failed, and leaves no queue or keys behind."""
    require_server(AMQP_URL, 5672)
    require_server(REDIS_URL, 6379)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "reference.loadtests.run", "--users", "4", "--spawn-rate", "4",
         "--duration", "4", "--out", str(out), *mode],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("locust_stats.csv", "report.html", "plot.png", "summary.json", "memory.csv"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    for key in ("users", "duration_s", "completion", "poll_interval_ms", "requests", "failures",
                "throughput_rps", "latency_ms", "notice_ms", "queue_ms", "work_ms",
                "redis_reads_per_request"):
        assert key in summary, key
    assert summary["requests"] > 20 and summary["failures"] == 0
    assert summary["throughput_rps"] > 0
    assert summary["redis_reads_per_request"] > 0
    if "--baseline" not in mode:
        assert summary["notice_ms"]["p50"] is not None
        stats = (out / "locust_stats.csv").read_text()
        assert "timing,notice" in stats and "timing,queue" in stats
    assert_cleaned_up(summary["queue"], summary["key_prefix"])


SPEC_FIELDS = ("users", "duration_s", "completion", "poll_interval_ms", "requests", "failures",
               "throughput_rps", "latency_ms", "notice_ms", "queue_ms", "work_ms",
               "redis_reads_per_request")


def require_wrk() -> None:
    """Skip when wrk is missing, or fail under CI=true, where it must be installed."""
    if shutil.which("wrk") is not None:
        return
    message = "wrk is not installed (Debian: apt-get install -y wrk)"
    if IN_CI:
        pytest.fail(f"{message}: the wrk load test must run in CI", pytrace=False)
    pytest.skip(message)


@pytest.mark.parametrize(("scenario", "completion", "statuses"),
                         [("jobs", "push", {"200"}), ("users", "batch", {"200", "201", "204"})],
                         ids=["jobs-push", "users-batch"])
def test_wrk_measures_product_and_baseline(tmp_path: Path, scenario: str, completion: str,
                                           statuses: set[str]) -> None:
    """A short `--driver wrk` run measures product and baseline in one command and reports
    SPEC §6's fields, throughput, no non-2xx answer, CPU per request of every component, the
    per-second timeline and the PNG, leaving no queue or keys behind."""
    require_server(AMQP_URL, 5672)
    require_server(REDIS_URL, 6379)
    require_wrk()
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "reference.loadtests.run", "--driver", "wrk", "-c", "8",
         "--duration", "3", "--warmup", "1", "--scenario", scenario, "--completion",
         completion, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    baseline = summary["baseline"]
    assert json.loads((out / "baseline" / "summary.json").read_text()) == baseline
    for one, where, kind in ((summary, out, completion), (baseline, out / "baseline",
                                                           "baseline")):
        check_wrk_summary(one, kind, statuses)
        seconds = json.loads((where / "timeline.json").read_text())
        assert len(seconds) >= 2 and all(s["rps"] > 0 for s in seconds)
        assert all(s["total_ms"]["p50"] is not None for s in seconds)
        assert_cleaned_up(one["queue"], one["key_prefix"])
    for part in ("queue_ms", "work_ms", "notice_ms"):
        assert summary[part]["p50"] is not None, part
    png = (out / "plot.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def check_wrk_summary(summary: dict[str, Any], completion: str, statuses: set[str]) -> None:
    for key in SPEC_FIELDS:
        assert key in summary, key
    assert summary["driver"] == "wrk" and summary["completion"] == completion
    assert summary["users"] == summary["connections"] == 8
    assert summary["requests"] > 50 and summary["throughput_rps"] > 0
    assert summary["non_2xx"] == 0 and summary["failures"] == 0, summary["status_counts"]
    assert set(summary["status_counts"]) == statuses
    assert 0 < summary["latency_ms"]["p50"] <= summary["latency_ms"]["p95"] \
        <= summary["latency_ms"]["p99"]
    cpu = summary["cpu_ms_per_request"]
    for component in ("api", "workers", "rabbitmq", "redis", "driver"):
        assert cpu[component] is not None and cpu[component] > 0, (component, cpu)


def assert_cleaned_up(queue: str, prefix: str) -> None:
    import aiormq
    import redis
    from aiormq.exceptions import ChannelNotFoundEntity

    client = redis.Redis.from_url(REDIS_URL.rsplit("/", 1)[0] + "/0")
    try:
        assert list(client.scan_iter(match=prefix + "*", count=1000)) == []
    finally:
        client.close()

    async def queue_exists() -> bool:
        conn = await aiormq.connect(AMQP_URL)
        try:
            channel = await conn.channel()
            await channel.queue_declare(queue, passive=True)
            return True
        except ChannelNotFoundEntity:
            return False
        finally:
            await conn.close()

    import asyncio

    assert asyncio.run(queue_exists()) is False


def test_queue_rate_publishes_and_consumes_every_message(amqp_url: str) -> None:
    """`python -m loadtests.queue_rate` confirms and consumes the same number of messages and
    reports positive rates, on a queue of its own that it deletes."""
    done = subprocess.run([sys.executable, "-m", "loadtests.queue_rate", "--url", amqp_url,
                           "--seconds", "1", "--queue-type", "quorum"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["published"] > 0 and result["consumed"] == result["published"]
    assert result["publish_rate"] > 0 and result["consume_rate"] > 0
