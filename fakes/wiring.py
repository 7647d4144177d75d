"""Factories behind memory:// URLs: the in-memory broker and fakeredis under the real adapters.

Every service built on one `MemoryBackends` shares its broker, its fake Redis server and its
`Faults`; each service gets its own broker connection and its own Redis client, each with a
fault group of its own (to sever one process without touching the others).
"""

from __future__ import annotations

from typing import Any

import fakeredis

from reference.adapters import redis_wiring
from reference.adapters.redis_keys import users_namespace
from reference.adapters.redis_results import RedisResultStore
from reference.adapters.redis_users import RedisUserRepository
from reference.fakes.faults import Faults, StoreFaults
from reference.fakes.memory_broker import InMemoryBroker, MemoryBrokerClient
from reference.fakes.redis_server import fake_redis_client
from reference.settings import Settings


def faults_of(memory: Any) -> Faults:
    if memory.faults is None:
        memory.faults = Faults()
    faults: Faults = memory.faults
    return faults


def memory_broker(settings: Settings, memory: Any) -> MemoryBrokerClient:
    if memory.broker is None:
        memory.broker = InMemoryBroker(faults_of(memory).broker)
    limit = settings.quorum_delivery_limit if settings.queue_type == "quorum" else None
    client: MemoryBrokerClient = memory.broker.client(delivery_limit=limit)
    return client


def memory_stores(settings: Settings, memory: Any) -> tuple[RedisResultStore, RedisUserRepository]:
    if memory.redis is None:
        memory.redis = fakeredis.FakeServer()
    client = fake_redis_client(
        memory.redis, faults_of(memory).store, StoreFaults(),
        max_connections=redis_wiring.pool_size(settings),
        socket_timeout_s=redis_wiring.SOCKET_TIMEOUT_S,
        pool_timeout_s=redis_wiring.POOL_TIMEOUT_S,
    )
    return (
        RedisResultStore(client, key_prefix=settings.key_prefix),
        RedisUserRepository(client, namespace=users_namespace(settings.key_prefix)),
    )
