"""Factory behind redis://, rediss:// and unix:// URLs."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from adapters.redis_results import RedisResultStore
from adapters.redis_users import RedisUserRepository
from reference.settings import Settings

POOL_TIMEOUT_S = 5.0
SOCKET_TIMEOUT_S = 5.0


def redis_client(url: str, *, max_connections: int) -> Redis:
    # A blocking pool waits for a free connection instead of failing under load.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )
    return Redis(connection_pool=pool)


def pool_size(settings: Settings) -> int:
    return max(32, 2 * settings.concurrency)


def redis_stores(settings: Settings, memory: Any) -> tuple[RedisResultStore, RedisUserRepository]:
    client = redis_client(settings.store_url, max_connections=pool_size(settings))
    return (
        RedisResultStore(client, key_prefix=settings.key_prefix),
        RedisUserRepository(client, namespace=settings.key_prefix + "reference:users:"),
    )
