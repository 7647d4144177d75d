"""A link that goes silent without closing (a "black hole"), on the real brokers, through a
proxy that stops forwarding: each client notices it within its documented detection bound.

The bounds (see adapters/redis_wiring.py and adapters/rabbitmq.py):

- a Redis command fails after SOCKET_TIMEOUT_S;
- a Redis subscription fails within PUBSUB_HEALTH_CHECK_S + PUBSUB_REPLY_TIMEOUT_S;
- a RabbitMQ publish fails after OPERATION_TIMEOUT_S (its confirm never comes); aiormq closes
  the connection once no frame came for 3 * (HEARTBEAT_S + 1) s, checked every HEARTBEAT_S // 2
  s; RabbitMQ drops its own side (and requeues the unacked) after at most 3 heartbeats.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator

import aiormq
import pytest
import pytest_asyncio

from reference.adapters import rabbitmq, redis_wiring
from reference.adapters.rabbitmq import RabbitMQBroker
from reference.adapters.redis_results import RedisResultStore
from reference.adapters.redis_wiring import redis_client
from reference.errors import BrokerUnavailable, StoreUnavailable
from reference.ports import Delivery
from reference.records import SUCCESS, ResultRecord
from tests.conftest import delete_queue_and_keys
from tests.faults import TcpProxy
from tests.helpers import eventually

pytestmark = pytest.mark.real

MARGIN_S = 1.5  # scheduling slack on a loaded CI machine

REDIS_COMMAND_BOUND_S = redis_wiring.SOCKET_TIMEOUT_S
REDIS_PUBSUB_BOUND_S = redis_wiring.PUBSUB_HEALTH_CHECK_S + redis_wiring.PUBSUB_REPLY_TIMEOUT_S
PUBLISH_BOUND_S = rabbitmq.OPERATION_TIMEOUT_S
AMQP_LOST_BOUND_S = 3 * (rabbitmq.HEARTBEAT_S + 1) + rabbitmq.HEARTBEAT_S // 2
RABBIT_NOTICES_BOUND_S = 3 * rabbitmq.HEARTBEAT_S


@pytest.fixture
def amqp_proxy(amqp_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy.for_url(amqp_url, 5672).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy.for_url(redis_url, 6379).start()
    yield proxy
    proxy.stop()


@pytest_asyncio.fixture
async def store(redis_url: str, redis_proxy: TcpProxy,
                unique: str) -> AsyncIterator[RedisResultStore]:
    prefix = f"bh{unique}:"
    store = RedisResultStore(redis_client(redis_proxy.url_through(redis_url), max_connections=4),
                             key_prefix=prefix)
    yield store
    redis_proxy.restore()
    await store.close()
    await delete_queue_and_keys(f"bh-{unique}", prefix)


async def _fails_within(call: Awaitable[object], bound_s: float, error: type[Exception]) -> float:
    """Await `call`, which must raise `error` within the bound; the time it took."""
    started = time.monotonic()
    with pytest.raises(error):
        await asyncio.wait_for(call, bound_s + 10)
    took = time.monotonic() - started
    assert took <= bound_s + MARGIN_S, f"took {took:.2f} s, bound {bound_s} s"
    return took


async def test_redis_command_fails_within_the_socket_timeout(
        store: RedisResultStore, redis_proxy: TcpProxy, unique: str) -> None:
    """A Redis command on a black-holed link raises StoreUnavailable after the socket timeout,
    on the pooled connection and on a new one, and works again once the link is restored."""
    await store.ping()
    redis_proxy.blackhole()
    took = await _fails_within(store.get("r1"), REDIS_COMMAND_BOUND_S, StoreUnavailable)
    assert took >= REDIS_COMMAND_BOUND_S - 0.1  # the timeout, not a close, ended it
    await _fails_within(store.ping(), REDIS_COMMAND_BOUND_S, StoreUnavailable)
    assert redis_proxy.held_connections >= 1  # that one was a new connection, never forwarded
    redis_proxy.restore()
    record = ResultRecord(status=SUCCESS, detail="done", result={"n": 1})
    assert await store.put("r1", record, ttl_s=60) is True
    assert await store.get("r1") == record


async def test_redis_subscription_notices_a_silent_link(
        store: RedisResultStore, redis_proxy: TcpProxy) -> None:
    """A finals subscription on a black-holed link raises StoreUnavailable within its
    health-check bound (and not on a quiet healthy link); a new one works after restore."""
    subscription = await store.subscribe_finals()
    quiet_until = time.monotonic() + 2 * REDIS_PUBSUB_BOUND_S  # several health checks pass
    while time.monotonic() < quiet_until:
        assert await subscription.next(1.0) is None
    redis_proxy.blackhole()

    async def read_until_it_fails() -> None:
        while True:
            await subscription.next(1.0)

    took = await _fails_within(read_until_it_fails(), REDIS_PUBSUB_BOUND_S, StoreUnavailable)
    assert took >= redis_wiring.PUBSUB_REPLY_TIMEOUT_S - 0.1
    await subscription.close()
    # Subscribing again through the black hole fails too, within the command bound.
    await _fails_within(store.subscribe_finals(), REDIS_COMMAND_BOUND_S, StoreUnavailable)
    redis_proxy.restore()
    subscription = await store.subscribe_finals()
    try:
        await store.put("r2", ResultRecord(status=SUCCESS, detail="done"), ttl_s=60)
        assert await subscription.next(5.0) == "r2"
    finally:
        await subscription.close()


async def _ready_count(amqp_url: str, queue: str) -> int:
    """The queue's ready messages, as RabbitMQ sees them (straight, not through the proxy)."""
    conn = await aiormq.connect(amqp_url)
    try:
        channel = await conn.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)
    finally:
        await conn.close()


async def test_rabbitmq_notices_a_silent_link(amqp_url: str, amqp_proxy: TcpProxy,
                                              unique: str) -> None:
    """Over a black-holed link a publish raises BrokerUnavailable within the confirm timeout,
    the connection is seen as lost within the heartbeat bound, RabbitMQ requeues the unacked
    delivery, and after restore the adapter reconnects by itself, consumes again and
    publishes."""
    queue = f"bh-{unique}"
    broker = RabbitMQBroker(amqp_proxy.url_through(amqp_url))
    deliveries: list[Delivery] = []

    async def hold(delivery: Delivery) -> None:
        deliveries.append(delivery)  # left unsettled

    try:
        await broker.connect()
        await broker.declare_queue(queue)
        await broker.consume(queue, hold, prefetch=1)
        await broker.publish(queue, b"{}", message_id="m1")
        await eventually(lambda: _true(len(deliveries) == 1))
        conn = broker._conn
        assert conn is not None and not conn.is_closed

        amqp_proxy.blackhole()
        started = time.monotonic()
        took = await _fails_within(broker.publish(queue, b"{}", message_id="m2"),
                                   PUBLISH_BOUND_S, BrokerUnavailable)
        assert took >= PUBLISH_BOUND_S - 0.1  # the confirm timeout, not a close

        rabbit_noticed: float | None = None
        while not conn.is_closed:  # aiormq's heartbeat watchdog, nothing else, closes it
            if rabbit_noticed is None and await _ready_count(amqp_url, queue) == 1:
                rabbit_noticed = time.monotonic() - started
            assert time.monotonic() - started <= AMQP_LOST_BOUND_S + MARGIN_S
            await asyncio.sleep(0.2)
        lost = time.monotonic() - started
        assert lost >= 3 * (rabbitmq.HEARTBEAT_S + 1) - rabbitmq.HEARTBEAT_S - 1  # not a close
        if rabbit_noticed is None:
            assert await eventually(lambda: _ready_is(amqp_url, queue, 1),
                                    timeout=RABBIT_NOTICES_BOUND_S + MARGIN_S - lost,
                                    interval=0.2)
            rabbit_noticed = time.monotonic() - started
        assert rabbit_noticed <= RABBIT_NOTICES_BOUND_S + MARGIN_S
        # While the link stays silent, a publish fails (a reconnect through it cannot finish).
        await _fails_within(broker.publish(queue, b"{}", message_id="m3"),
                            rabbitmq.CONNECT_TIMEOUT_S, BrokerUnavailable)

        amqp_proxy.restore()
        # With no call from us (a worker never publishes), the reconnect supervisor comes back
        # and restores the consumer, which gets m1 again (requeued by RabbitMQ). It once died
        # of the CancelledError that aiormq closes a silent connection with.
        assert await eventually(lambda: _true(len(deliveries) >= 2), timeout=20, interval=0.2)
        assert deliveries[1].message_id == "m1" and deliveries[1].redelivered

        async def published() -> bool:
            try:
                await broker.publish(queue, b"{}", message_id="m4")
            except BrokerUnavailable:
                return False
            return True

        assert await eventually(published, timeout=20, interval=0.2)
        print(f"\nblack hole: publish failed after {took:.2f} s, aiormq closed the connection "
              f"after {lost:.2f} s, RabbitMQ requeued after {rabbit_noticed:.2f} s")
    finally:
        await broker.close()
        amqp_proxy.restore()
        await delete_queue_and_keys(queue, f"bh{unique}:")


async def _ready_is(amqp_url: str, queue: str, count: int) -> bool:
    return await _ready_count(amqp_url, queue) == count


async def _true(value: bool) -> bool:
    return value
