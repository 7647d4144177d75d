"""The fault API of the fakes (fakes/faults.py) does what its docstrings say: a fault hits the
n-th call or a window of loop time, each store fault raises what redis-py raises on a real
connection (and the adapter maps it to StoreUnavailable), and each broker fault fails the
operations it names and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import fakeredis
import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from reference.adapters.redis_results import RedisResultStore
from reference.errors import BrokerUnavailable, StoreUnavailable
from reference.fakes.faults import Fault, Faults, StoreFaults
from reference.fakes.memory_broker import InMemoryBroker, MemoryBrokerClient
from reference.fakes.redis_server import fake_redis_client
from reference.records import QUEUED, ResultRecord
from tests.contract.harness import Inbox

T = TypeVar("T")

SOCKET_TIMEOUT_S = 0.2
CONFIRM_TIMEOUT_S = 0.2
DETECTION_S = 0.3
QUEUE = "faults"


class ManualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when the test moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now


def run_on_manual_clock(scenario: Callable[[ManualClockLoop], Coroutine[Any, Any, T]]) -> T:
    """Run `scenario(loop)` on a loop whose time stands still unless the scenario moves it."""
    loop = ManualClockLoop()
    try:
        return loop.run_until_complete(scenario(loop))
    finally:
        loop.close()


# --- Fault: n-th call and windows --------------------------------------------------------------


def test_on_call_hits_exactly_the_nth_call_from_now() -> None:
    """on_call(3) hits the third call after it and no other; calls before it do not count."""
    fault = Fault("f")
    assert [fault.fires() for _ in range(2)] == [False, False]
    fault.on_call(3)
    assert [fault.fires() for _ in range(5)] == [False, False, True, False, False]
    assert (fault.calls, fault.fired) == (7, 1)


def test_on_call_with_times_hits_a_run_of_calls() -> None:
    """on_call(2, times=3) hits the second, third and fourth calls from now."""
    fault = Fault("f").on_call(2, times=3)
    assert [fault.fires() for _ in range(6)] == [False, True, True, True, False, False]
    assert fault.fired == 3


def test_on_call_refuses_counts_below_one() -> None:
    """The n-th call and the number of times start at 1."""
    with pytest.raises(ValueError):
        Fault("f").on_call(0)
    with pytest.raises(ValueError):
        Fault("f").on_call(1, times=0)


def test_an_armed_call_does_not_make_the_fault_active() -> None:
    """A fault armed for a later call is not active until that call, and off() disarms it."""
    fault = Fault("f").on_call(2)
    assert not fault.active
    assert "armed" in repr(fault)
    fault.off()
    assert [fault.fires() for _ in range(3)] == [False, False, False]


def test_on_without_a_window_lasts_until_off() -> None:
    """on() with no window hits every call until off()."""
    fault = Fault("f").on()
    assert all(fault.fires() for _ in range(100))
    fault.off()
    assert not fault.fires()
    assert (fault.calls, fault.fired) == (101, 100)


def test_a_window_ends_after_for_s_of_loop_time() -> None:
    """on(for_s=2) hits every call during two seconds of loop time, then none."""

    async def scenario(loop: ManualClockLoop) -> list[bool]:
        fault = Fault("f").on(for_s=2.0)
        seen = [fault.fires(), fault.active]
        loop.now += 1.999
        seen += [fault.fires(), fault.active]
        loop.now += 0.002
        seen += [fault.fires(), fault.active]
        return seen

    assert run_on_manual_clock(scenario) == [True, True, True, True, False, False]


def test_faults_off_switches_every_fault_off_and_fired_counts_the_hits() -> None:
    """Faults.off() ends every broker and store fault; fired() names those that hit."""
    faults = Faults()
    faults.broker.nack.on()
    faults.store.oom.on()
    faults.broker.nack.fires()
    faults.store.oom.fires()
    faults.store.oom.fires()
    assert faults.fired() == {"broker.nack": 1, "store.oom": 2}
    faults.off()
    assert not any(f.active for f in faults.broker.all() + faults.store.all())


# --- store faults --------------------------------------------------------------------------------


@dataclass
class FakeStore:
    faults: StoreFaults
    client: Redis  # the faulty client, as the adapters get it
    store: RedisResultStore
    server_view: Any  # a fault-free client of the same server: what Redis holds

    async def under(self, fault: Fault, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` with `fault` on, on a connection that is already open (so the fault meets
        the command, not the connection handshake)."""
        await self.client.ping()
        fault.on()
        try:
            return await call()
        finally:
            fault.off()

    async def holds(self, key: str) -> bool:
        return bool(await self.server_view.exists(key))


@pytest.fixture
async def fake() -> AsyncIterator[FakeStore]:
    server = fakeredis.FakeServer()
    faults = StoreFaults()
    client = fake_redis_client(server, faults, max_connections=1,
                               socket_timeout_s=SOCKET_TIMEOUT_S, pool_timeout_s=2.0)
    view = fakeredis.FakeAsyncRedis(server=server)
    yield FakeStore(faults, client, RedisResultStore(client, key_prefix="t:"), view)
    await client.aclose()
    await view.aclose()


def queued(detail: str = "") -> ResultRecord:
    return ResultRecord(status=QUEUED, detail=detail)


# name: (what redis-py raises, whether the server ran the write)
STORE_ERRORS: dict[str, tuple[type[BaseException], bool]] = {
    "refused": (redis_errors.ConnectionError, False),
    "reset_peer": (redis_errors.ConnectionError, False),
    "closed_transport": (RuntimeError, True),
    "timeout": (redis_errors.TimeoutError, True),
    "readonly": (redis_errors.ReadOnlyError, False),
    "oom": (redis_errors.OutOfMemoryError, False),
}


@pytest.mark.parametrize("name", sorted(STORE_ERRORS))
async def test_each_store_fault_raises_what_redis_py_raises(fake: FakeStore, name: str) -> None:
    """A write under each store fault raises redis-py's own exception for that fault, and
    the server ran the command only where the fault loses the reply, not the command."""
    error, applied = STORE_ERRORS[name]
    fault = getattr(fake.faults, name)
    with pytest.raises(error):
        await fake.under(fault, lambda: fake.client.set("raw", "1"))
    assert fault.fired == 1
    assert await fake.holds("raw") is applied


@pytest.mark.parametrize("name", sorted(STORE_ERRORS))
async def test_the_adapter_maps_each_store_fault_to_store_unavailable(
    fake: FakeStore, name: str
) -> None:
    """Through the result store, each store fault is StoreUnavailable, caused by redis-py's
    exception, and the record is written exactly when the command ran."""
    error, applied = STORE_ERRORS[name]
    fault = getattr(fake.faults, name)
    with pytest.raises(StoreUnavailable) as caught:
        await fake.under(fault, lambda: fake.store.create("r1", queued(), ttl_s=60))
    assert isinstance(caught.value.__cause__, error)
    assert await fake.holds("t:r1") is applied
    # Once the fault is off, the store works on the same client again.
    assert await fake.store.create("r2", queued(), ttl_s=60) is True


async def test_oom_refuses_writes_but_not_reads(fake: FakeStore) -> None:
    """Under OOM a write is refused while a read of what is stored still answers."""
    await fake.store.create("kept", queued("before"), ttl_s=60)
    fake.faults.oom.on()
    try:
        with pytest.raises(StoreUnavailable):
            await fake.store.create("new", queued(), ttl_s=60)
        record = await fake.store.get("kept")
        assert record is not None and record.detail == "before"
        assert await fake.store.get_many(["kept", "new"]) == [record, None]
    finally:
        fake.faults.oom.off()


async def test_on_call_hits_the_nth_store_command(fake: FakeStore) -> None:
    """readonly.on_call(2) refuses the second command from now and lets the others through."""
    await fake.client.ping()
    fake.faults.readonly.on_call(2)
    outcomes: list[str] = []
    for key in ("k1", "k2", "k3"):
        try:
            await fake.client.set(key, "1")
            outcomes.append("ok")
        except redis_errors.ReadOnlyError:
            outcomes.append("readonly")
    assert outcomes == ["ok", "readonly", "ok"]
    assert [await fake.holds(k) for k in ("k1", "k2", "k3")] == [True, False, True]


async def test_latency_delays_the_reply_and_the_command_runs(fake: FakeStore) -> None:
    """Under latency the reply comes at least `delay_s` late, and the command succeeds."""
    loop = asyncio.get_running_loop()
    await fake.client.ping()
    fake.faults.latency.on(delay_s=0.15)
    try:
        start = loop.time()
        async with asyncio.timeout(5):
            assert await fake.store.create("slow", queued(), ttl_s=60) is True
        elapsed = loop.time() - start
    finally:
        fake.faults.latency.off()
    assert elapsed >= 0.15
    assert await fake.holds("t:slow")


async def test_blackhole_fails_after_the_socket_timeout(fake: FakeStore) -> None:
    """Under a black hole a command gets no answer and fails as redis-py's TimeoutError once
    the socket timeout has passed, which the adapter maps to StoreUnavailable."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(redis_errors.TimeoutError):
        async with asyncio.timeout(5):
            await fake.under(fake.faults.blackhole, lambda: fake.client.get("k"))
    assert loop.time() - start >= SOCKET_TIMEOUT_S
    with pytest.raises(StoreUnavailable) as caught:
        async with asyncio.timeout(5):
            await fake.under(fake.faults.blackhole, lambda: fake.store.get("r"))
    assert isinstance(caught.value.__cause__, redis_errors.TimeoutError)


async def test_timeout_waits_out_the_socket_timeout(fake: FakeStore) -> None:
    """The timeout fault fails only once the socket timeout has passed."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(StoreUnavailable):
        async with asyncio.timeout(5):
            await fake.under(fake.faults.timeout, lambda: fake.store.get("r"))
    assert loop.time() - start >= SOCKET_TIMEOUT_S


def test_a_store_fault_window_ends_with_loop_time() -> None:
    """readonly.on(for_s=5) refuses writes for five seconds of loop time, and no longer."""

    async def scenario(loop: ManualClockLoop) -> list[str]:
        server = fakeredis.FakeServer()
        faults = StoreFaults()
        client = fake_redis_client(server, faults, max_connections=1,
                                   socket_timeout_s=SOCKET_TIMEOUT_S, pool_timeout_s=2.0)
        store = RedisResultStore(client)
        outcomes: list[str] = []
        try:
            await client.ping()
            faults.readonly.on(for_s=5.0)
            for step in (0.0, 4.99, 0.02):
                loop.now += step
                try:
                    await store.create(f"r{len(outcomes)}", queued(), ttl_s=60)
                    outcomes.append("written")
                except StoreUnavailable:
                    outcomes.append("refused")
        finally:
            await client.aclose()
        return outcomes

    assert run_on_manual_clock(scenario) == ["refused", "refused", "written"]


# --- broker faults -------------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[InMemoryBroker]:
    broker = InMemoryBroker(confirm_timeout_s=CONFIRM_TIMEOUT_S, detection_s=DETECTION_S)
    yield broker
    broker.faults.off()
    for client in list(broker.clients):
        await client.close()


async def connected(server: InMemoryBroker) -> MemoryBrokerClient:
    client = server.client()
    await client.connect()
    await client.declare_queue(QUEUE)
    return client


async def consuming(server: InMemoryBroker, *bodies: bytes) -> tuple[MemoryBrokerClient, Inbox]:
    """A client consuming QUEUE (prefetch 10), after `bodies` were published."""
    client = await connected(server)
    for i, body in enumerate(bodies):
        await client.publish(QUEUE, body, message_id=str(i))
    inbox = Inbox()
    await client.consume(QUEUE, inbox, prefetch=10)
    return client, inbox


async def test_connection_loss_window_fails_everything_until_it_ends(
    server: InMemoryBroker,
) -> None:
    """During a connection-loss window, publish, ack, connect and consume fail with
    BrokerUnavailable and nothing is delivered; after it, the unsettled message comes back
    redelivered and publishing works again."""
    client, inbox = await consuming(server, b"m")
    first = await inbox.next()
    # Given an outage,
    server.faults.connection_loss.on()
    try:
        # then every operation fails, the unsettled message's ack included,
        with pytest.raises(BrokerUnavailable):
            await client.publish(QUEUE, b"lost", message_id="lost")
        with pytest.raises(BrokerUnavailable):
            await first.ack()
        with pytest.raises(BrokerUnavailable):
            await server.client().connect()
        with pytest.raises(BrokerUnavailable):
            await client.consume(QUEUE, Inbox(), prefetch=1)
        # and nothing is delivered.
        assert await inbox.nothing_within(0.3)
        assert server.unsettled() == 0
    finally:
        server.faults.connection_loss.off()
    # When it ends, the consumer resumes with the message, marked redelivered.
    again = await inbox.next()
    assert (again.body, again.redelivered) == (b"m", True)
    await again.ack()
    await client.publish(QUEUE, b"after", message_id="after")
    assert (await inbox.next()).body == b"after"
    assert client.reconnects >= 1


async def test_connection_loss_window_of_loop_time_ends_by_itself(server: InMemoryBroker) -> None:
    """A connection-loss window given with for_s ends by itself, and the consumer then gets
    its unsettled message back without anyone switching the fault off."""
    _, inbox = await consuming(server, b"m")
    await inbox.next()
    fault = server.faults.connection_loss.on(for_s=0.2)
    again = await inbox.next()
    assert (again.body, again.redelivered) == (b"m", True)
    assert not fault.active
    await again.ack()


async def test_connection_loss_on_the_nth_call_drops_once_and_reconnects(
    server: InMemoryBroker,
) -> None:
    """connection_loss.on_call(1) fails the next operation only: that client's unsettled
    delivery goes back, and the call after it reconnects at once."""
    client, inbox = await consuming(server, b"m")
    first = await inbox.next()
    server.faults.connection_loss.on_call(1)
    with pytest.raises(BrokerUnavailable):
        await client.publish(QUEUE, b"lost", message_id="lost")
    await client.publish(QUEUE, b"next", message_id="next")
    with pytest.raises(BrokerUnavailable):
        await first.ack()  # its connection is gone
    got = [await inbox.next(), await inbox.next()]
    assert sorted((d.body, d.redelivered) for d in got) == [(b"m", True), (b"next", False)]
    for d in got:
        await d.ack()
    assert await client.message_count(QUEUE) == 0


async def test_channel_closed_on_a_settle_hands_the_delivery_back(
    server: InMemoryBroker,
) -> None:
    """A channel closed during an ack fails that ack with BrokerUnavailable, and the consumer,
    attached again on a new channel, gets the message back redelivered."""
    _, inbox = await consuming(server, b"m")
    first = await inbox.next()
    server.faults.channel_closed.on_call(1)
    with pytest.raises(BrokerUnavailable):
        await first.ack()
    again = await inbox.next()
    assert (again.body, again.redelivered) == (b"m", True)
    await again.ack()
    assert server.unsettled() == 0


async def test_channel_closed_on_a_publish_queues_nothing(server: InMemoryBroker) -> None:
    """A publisher channel closed by the broker fails that publish; nothing is queued, and
    the next publish goes through."""
    client = await connected(server)
    server.faults.channel_closed.on_call(1)
    with pytest.raises(BrokerUnavailable):
        await client.publish(QUEUE, b"lost", message_id="lost")
    assert await client.message_count(QUEUE) == 0
    await client.publish(QUEUE, b"kept", message_id="kept")
    assert await client.message_count(QUEUE) == 1


async def test_nack_fails_the_publish_and_queues_nothing(server: InMemoryBroker) -> None:
    """A nacked publish raises BrokerUnavailable and leaves the queue empty."""
    client = await connected(server)
    server.faults.nack.on_call(1)
    with pytest.raises(BrokerUnavailable):
        await client.publish(QUEUE, b"nacked", message_id="n")
    assert await client.message_count(QUEUE) == 0
    await client.publish(QUEUE, b"acked", message_id="a")
    assert await client.message_count(QUEUE) == 1


async def test_confirm_lost_queues_the_message_but_fails_after_the_confirm_timeout(
    server: InMemoryBroker,
) -> None:
    """A lost confirm fails the publish once the confirm timeout has passed, although the
    message was queued (the publisher cannot know)."""
    client = await connected(server)
    server.faults.confirm_lost.on_call(1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(5):
            await client.publish(QUEUE, b"queued", message_id="q")
    assert loop.time() - start >= CONFIRM_TIMEOUT_S
    delivery = await client.get(QUEUE)
    assert delivery is not None and delivery.body == b"queued"
    await delivery.ack()


async def test_slow_confirm_delays_the_publish_and_fails_past_the_confirm_timeout(
    server: InMemoryBroker,
) -> None:
    """A slow confirm makes publish return after `delay_s`; one slower than the confirm
    timeout fails it, with the message queued all the same."""
    client = await connected(server)
    loop = asyncio.get_running_loop()
    server.faults.slow_confirm.on_call(1, delay_s=0.1)
    start = loop.time()
    async with asyncio.timeout(5):
        await client.publish(QUEUE, b"slow", message_id="s")
    assert loop.time() - start >= 0.1
    server.faults.slow_confirm.on_call(1, delay_s=CONFIRM_TIMEOUT_S * 5)
    start = loop.time()
    with pytest.raises(BrokerUnavailable):
        async with asyncio.timeout(5):
            await client.publish(QUEUE, b"too slow", message_id="t")
    assert loop.time() - start >= CONFIRM_TIMEOUT_S
    assert await client.message_count(QUEUE) == 2


async def test_blackhole_declares_the_connection_dead_after_the_detection_bound(
    server: InMemoryBroker,
) -> None:
    """Under a black hole an operation hangs until the detection bound, then fails as a lost
    connection; the unsettled delivery goes back and comes again once the link is back."""
    client, inbox = await consuming(server, b"m")
    first = await inbox.next()
    loop = asyncio.get_running_loop()
    # Given a silent link,
    server.faults.blackhole.on()
    try:
        # when a publish is tried, then it fails, but only once the silence was detected,
        start = loop.time()
        with pytest.raises(BrokerUnavailable):
            async with asyncio.timeout(5):
                await client.publish(QUEUE, b"lost", message_id="lost")
        assert loop.time() - start >= DETECTION_S
        # and the connection is dead: its delivery went back and cannot be acked.
        assert not client.is_open
        assert server.unsettled() == 0
        with pytest.raises(BrokerUnavailable):
            await first.ack()
    finally:
        server.faults.blackhole.off()
    again = await inbox.next()
    assert (again.body, again.redelivered) == (b"m", True)
    await again.ack()
