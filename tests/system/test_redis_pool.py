"""The Redis pool waits for a free connection (never MaxConnectionsError), with a bound."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from reference.adapters.redis_wiring import redis_client
from tests.conftest import REDIS_URL, require_server

pytestmark = pytest.mark.real


def client(size: int, wait_timeout: float | None = None) -> Redis:
    redis = redis_client(require_server(REDIS_URL, 6379), max_connections=size)
    if wait_timeout is not None:
        redis.connection_pool.timeout = wait_timeout  # the product's is 5 s: too slow to test
    return redis


async def test_more_callers_than_connections_all_get_served(unique: str) -> None:
    """Ten blocking commands at once over two connections: all answer, two connections made."""
    redis = client(2)
    try:
        started = time.monotonic()
        replies = await asyncio.gather(*(redis.blpop([f"t{unique}:none"], timeout=0.2)
                                         for _ in range(10)))
        assert replies == [None] * 10
        assert time.monotonic() - started >= 0.2 * 10 / 2 - 0.05  # they took turns, two at a time
        pool = redis.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) == 2
    finally:
        await redis.aclose(close_connection_pool=True)


async def test_waiting_for_a_connection_is_bounded(unique: str) -> None:
    """With every connection busy, a caller waits at most wait_timeout, then gets an error."""
    redis = client(1, wait_timeout=0.2)
    try:
        busy = asyncio.ensure_future(redis.blpop([f"t{unique}:none"], timeout=1))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await redis.get(f"t{unique}:x")
        assert 0.15 < time.monotonic() - started < 0.9
        assert await busy is None
        assert await redis.get(f"t{unique}:x") is None  # the slot came back
    finally:
        await redis.aclose(close_connection_pool=True)
