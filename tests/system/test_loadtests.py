"""`python -m loadtests.run` does what SPEC §6 says, in one command, for product and baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import AMQP_URL, REDIS_URL, require_server

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
