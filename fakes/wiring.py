"""Factories behind memory:// URLs: the in-memory broker and fakeredis under the real adapters."""

from __future__ import annotations

from typing import Any

import fakeredis

from adapters.redis_results import RedisResultStore
from adapters.redis_users import RedisUserRepository
from fakes.memory_broker import InMemoryBroker, MemoryBrokerClient
from reference.settings import Settings


def memory_broker(settings: Settings, memory: Any) -> MemoryBrokerClient:
    if memory.broker is None:
        memory.broker = InMemoryBroker()
    limit = settings.delivery_limit if settings.queue_type == "quorum" else None
    return memory.broker.client(delivery_limit=limit)


def memory_stores(settings: Settings, memory: Any) -> tuple[RedisResultStore, RedisUserRepository]:
    if memory.redis is None:
        memory.redis = fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(server=memory.redis)
    return (
        RedisResultStore(client, key_prefix=settings.key_prefix),
        RedisUserRepository(client, namespace=settings.key_prefix + "reference:users:"),
    )
