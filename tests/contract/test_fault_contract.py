"""Errors under faults, one set of assertions bound to the fakes and to the real servers.

The broker side runs on the in-memory broker and on RabbitMQ (through a TcpProxy for an
outage); the store side on fakeredis behind the faulty connection and on a real Redis (through
a TcpProxy for a reset, a throwaway replica for READONLY). What a fault raises must not depend
on which of them is under the adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from redis import exceptions as redis_errors

from reference.adapters.redis_results import RedisResultStore
from reference.errors import BrokerUnavailable, StoreUnavailable
from reference.fakes.faults import StoreFaults
from reference.fakes.memory_broker import InMemoryBroker
from reference.fakes.redis_server import fake_redis_client
from reference.ports import Delivery, MessageBroker
from reference.records import QUEUED, ResultRecord
from tests.conftest import delete_queue_and_keys
from tests.contract.harness import get_eventually
from tests.faults import TcpProxy
from tests.helpers import eventually

BOUND_S = 20.0  # no fault may make an operation hang longer than this


# --- the broker sides ----------------------------------------------------------------------------


class MemoryBrokerSide:
    """The in-memory broker; an outage is its connection_loss fault."""

    name = "memory"

    def __init__(self, unique: str) -> None:
        self.queue = f"fault-contract-{unique}"
        self.server = InMemoryBroker()
        self.clients: list[Any] = []

    async def client(self) -> MessageBroker:
        client = self.server.client()
        await client.connect()
        self.clients.append(client)
        return client

    async def close_connection_underneath(self, client: MessageBroker) -> None:
        self.server.drop_all("the connection closed")

    def outage(self) -> None:
        self.server.faults.connection_loss.on()

    def heal(self) -> None:
        self.server.faults.connection_loss.off()

    async def cleanup(self) -> None:
        self.heal()
        for client in self.clients:
            await client.close()


class RabbitBrokerSide:
    """RabbitMQ, its clients connected through a TcpProxy; an outage is a cut of the proxy."""

    name = "rabbitmq"

    def __init__(self, url: str, unique: str) -> None:
        self.url = url
        self.queue = f"fault-contract-{unique}"
        self.proxy = TcpProxy.for_url(url, 5672).start()
        self.clients: list[Any] = []

    async def client(self) -> MessageBroker:
        from reference.adapters.rabbitmq import RabbitMQBroker

        client = RabbitMQBroker(self.proxy.url_through(self.url))
        await client.connect()
        self.clients.append(client)
        return client

    async def close_connection_underneath(self, client: MessageBroker) -> None:
        connection = client._conn  # type: ignore[attr-defined]
        assert connection is not None
        await connection.close()

    def outage(self) -> None:
        self.proxy.cut()

    def heal(self) -> None:
        self.proxy.restore()

    async def cleanup(self) -> None:
        self.heal()
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()
        self.proxy.stop()
        await delete_queue_and_keys(self.queue, f"fault-contract-{self.queue}:")


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.real)])
async def broker_side(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[Any]:
    if request.param == "memory":
        side: Any = MemoryBrokerSide(unique)
    else:
        side = RabbitBrokerSide(request.getfixturevalue("amqp_url"), unique)
    yield side
    await side.cleanup()


async def _published(broker: MessageBroker, queue: str, body: bytes) -> bool:
    try:
        await broker.publish(queue, body, message_id="probe")
    except BrokerUnavailable:
        return False
    return True


async def test_ack_after_the_connection_closed_is_broker_unavailable(broker_side: Any) -> None:
    """Acking a delivery whose connection has closed underneath the client raises
    BrokerUnavailable (not DeliveryAlreadySettled), and the message comes back redelivered."""
    broker = await broker_side.client()
    queue = broker_side.queue
    await broker.declare_queue(queue)
    await broker.publish(queue, b"m", message_id="m")
    delivery: Delivery = await get_eventually(broker, queue)
    assert delivery.redelivered is False
    # Given the connection that carried the delivery closed,
    await broker_side.close_connection_underneath(broker)
    # when the client acks it, then the ack fails as the broker being unavailable,
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(BOUND_S):
            await delivery.ack()
    # and the broker hands the message out again.
    async with asyncio.timeout(BOUND_S):
        again = await get_eventually(broker, queue, timeout=BOUND_S / 2)
    assert (again.body, again.redelivered) == (b"m", True)
    await again.ack()


async def test_publish_during_an_outage_is_broker_unavailable(broker_side: Any) -> None:
    """While the broker cannot be reached, publish raises BrokerUnavailable without hanging;
    after the outage the same client publishes again."""
    broker = await broker_side.client()
    queue = broker_side.queue
    await broker.declare_queue(queue)
    # Given an outage,
    broker_side.outage()
    try:
        # when a message is published, then it fails as the broker being unavailable.
        with pytest.raises(BrokerUnavailable):
            async with asyncio.timeout(BOUND_S):
                await broker.publish(queue, b"lost", message_id="lost")
    finally:
        broker_side.heal()
    assert await eventually(lambda: _published(broker, queue, b"after"), timeout=BOUND_S,
                            interval=0.1)


# --- the store sides -----------------------------------------------------------------------------


def _record() -> ResultRecord:
    return ResultRecord(status=QUEUED, detail="queued")


class FakeRedisSide:
    """fakeredis behind the faulty connection; a reset is its reset_peer fault."""

    name = "fakeredis"

    def __init__(self, unique: str) -> None:
        self.faults = StoreFaults()
        self.client = fake_redis_client(fakeredis.FakeServer(), self.faults, max_connections=2,
                                        socket_timeout_s=2.0, pool_timeout_s=2.0)
        self.store = RedisResultStore(self.client, key_prefix=f"t{unique}:")

    def reset(self) -> None:
        self.faults.reset_peer.on()

    def heal(self) -> None:
        self.faults.reset_peer.off()

    async def cleanup(self) -> None:
        self.heal()
        await self.client.aclose()


class RealRedisSide:
    """A real Redis through a TcpProxy; a reset is a cut of the proxy."""

    name = "redis"

    def __init__(self, url: str, unique: str) -> None:
        from reference.adapters.redis_wiring import redis_client

        self.prefix = f"t{unique}:"
        self.proxy = TcpProxy.for_url(url, 6379).start()
        self.client = redis_client(self.proxy.url_through(url), max_connections=2)
        self.store = RedisResultStore(self.client, key_prefix=self.prefix)

    def reset(self) -> None:
        self.proxy.cut()

    def heal(self) -> None:
        self.proxy.restore()

    async def cleanup(self) -> None:
        self.heal()
        await self.client.aclose(close_connection_pool=True)
        self.proxy.stop()
        await delete_queue_and_keys(f"fault-contract-{self.prefix}", self.prefix)


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.real)])
async def store_side(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[Any]:
    if request.param == "fakeredis":
        side: Any = FakeRedisSide(unique)
    else:
        side = RealRedisSide(request.getfixturevalue("redis_url"), unique)
    yield side
    await side.cleanup()


async def _answers(store: RedisResultStore) -> bool:
    try:
        await store.get("r1")
    except StoreUnavailable:
        return False
    return True


async def test_a_command_on_a_reset_connection_is_store_unavailable(store_side: Any) -> None:
    """A Redis command on a connection that was reset raises StoreUnavailable without
    hanging; once the link is back, the same store answers again."""
    store: RedisResultStore = store_side.store
    assert await store.create("r1", _record(), ttl_s=60) is True  # a pooled, open connection
    # Given the connection is reset,
    store_side.reset()
    try:
        # when a command is sent, then it fails as the store being unavailable.
        with pytest.raises(StoreUnavailable):
            async with asyncio.timeout(BOUND_S):
                await store.get("r1")
    finally:
        store_side.heal()
    assert await eventually(lambda: _answers(store), timeout=BOUND_S, interval=0.1)
    record = await store.get("r1")
    assert record is not None and record.status == QUEUED


# --- READONLY: a fake fault, and a real replica -------------------------------------------------


@contextlib.contextmanager
def redis_replica(master_url: str) -> Iterator[str]:
    """A throwaway `redis-server`, replica of the test Redis, on a Unix socket of its own;
    started here and stopped here by its PID. Yields its URL."""
    from urllib.parse import urlsplit

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not on PATH")
    master = urlsplit(master_url)
    with tempfile.TemporaryDirectory(prefix="replica-") as tmp:
        sock = Path(tmp) / "redis.sock"
        proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
             "--replicaof", master.hostname or "127.0.0.1", str(master.port or 6379),
             "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            yield f"unix://{sock}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


async def _pings(client: Any) -> bool:
    try:
        return bool(await client.ping())
    except Exception:
        return False


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.real)])
async def replica(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[tuple[str, Any]]:
    """(its name, a result store) whose server is a read-only replica: the fake with its
    readonly fault on, or a real replica of the test Redis."""
    if request.param == "fakeredis":
        faults = StoreFaults()
        client = fake_redis_client(fakeredis.FakeServer(), faults, max_connections=2,
                                   socket_timeout_s=2.0, pool_timeout_s=2.0)
        faults.readonly.on()
        yield request.param, RedisResultStore(client, key_prefix=f"t{unique}:")
        await client.aclose()
        return
    from reference.adapters.redis_wiring import redis_client

    with redis_replica(request.getfixturevalue("redis_url")) as url:
        client = redis_client(url, max_connections=2)
        try:
            assert await eventually(lambda: _pings(client), timeout=BOUND_S, interval=0.05)
            yield request.param, RedisResultStore(client, key_prefix=f"t{unique}:")
        finally:
            await client.aclose(close_connection_pool=True)


async def test_a_write_to_a_read_only_replica_is_store_unavailable(
    replica: tuple[str, RedisResultStore],
) -> None:
    """A write refused with READONLY raises StoreUnavailable, caused by redis-py's
    ReadOnlyError."""
    _, store = replica
    with pytest.raises(StoreUnavailable) as caught:
        async with asyncio.timeout(BOUND_S):
            await store.create("r1", _record(), ttl_s=60)
    assert isinstance(caught.value.__cause__, redis_errors.ReadOnlyError)


async def test_a_read_only_replica_still_answers_reads(
    replica: tuple[str, RedisResultStore],
) -> None:
    """A read-only replica answers reads (a key it does not hold reads as absent)."""
    _, store = replica
    async with asyncio.timeout(BOUND_S):
        assert await store.get("r1") is None
