"""Shared test configuration: real-server detection (skip on a laptop, fail in CI)."""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
AMQP_URL = os.environ.get("REFERENCE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("REFERENCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port),
                                      timeout=1.0):
            return True
    except OSError:
        return False


def require_server(url: str, default_port: int) -> str:
    """Return the URL if its server answers; otherwise skip, or fail under CI=true."""
    if _reachable(url, default_port):
        return url
    message = f"no server at {url}"
    if IN_CI:
        pytest.fail(f"{message}: real-broker tests must run in CI", pytrace=False)
    pytest.skip(message)


async def delete_queue_and_keys(queue: str, key_prefix: str) -> None:
    """Remove what a test left on the real brokers: its queue, its DLQ, its keys."""
    import aiormq
    import redis.asyncio as aioredis

    conn = await aiormq.connect(AMQP_URL)
    channel = await conn.channel()
    for name in (queue, queue + ".dlq"):
        await channel.queue_delete(name)
    await conn.close()
    client = aioredis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=key_prefix + "*", count=1000)]
    if keys:
        await client.unlink(*keys)
    await client.aclose()


@pytest.fixture
def amqp_url() -> str:
    return require_server(AMQP_URL, 5672)


@pytest.fixture
def redis_url() -> str:
    return require_server(REDIS_URL, 6379)


@pytest.fixture
def unique() -> str:
    """A short unique token for queue names and key prefixes, so runs never collide."""
    return uuid.uuid4().hex[:12]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Under CI=true a skipped real-broker or cluster test is a failure, whatever made it
    skip."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    marker = next((m for m in ("real", "cluster") if item.get_closest_marker(m)), None)
    if IN_CI and report.skipped and marker is not None:
        report.outcome = "failed"
        report.longrepr = f"{marker} test skipped under CI=true: {report.longrepr}"
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if anything pulled gevent into the test process (locust does, on import)."""
    import sys

    if "gevent" in sys.modules:
        print("\nerror: gevent was imported into the pytest process (keep locust out of tests)")
        session.exitstatus = 1
