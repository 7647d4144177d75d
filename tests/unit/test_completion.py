"""The ways to wait (poll, batch, push, reply) against the Redis store on fakeredis; reply
also on the in-memory broker's Direct Reply-To."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest

from reference.adapters.redis_results import RedisResultStore
from reference.completion import (
    BatchCompletion,
    PollingCompletion,
    PushCompletion,
    ReplyCompletion,
)
from reference.errors import BrokerUnavailable
from reference.fakes.memory_broker import InMemoryBroker, MemoryBrokerClient
from reference.ports import DIRECT_REPLY_TO, Completion, Delivery
from reference.records import RUNNING, SUCCESS, ResultRecord
from tests.contract.harness import get_eventually


class CountingStore:
    """The real store, with its reads counted (a measuring tape, not a stand-in)."""

    def __init__(self, inner: RedisResultStore) -> None:
        self.inner = inner
        self.gets = 0
        self.get_manys = 0
        self.records_read = 0

    async def get(self, request_id: str) -> ResultRecord | None:
        self.gets += 1
        self.records_read += 1
        return await self.inner.get(request_id)

    async def get_many(self, ids: list[str]) -> list[ResultRecord | None]:
        self.get_manys += 1
        self.records_read += len(ids)
        return await self.inner.get_many(ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
async def store() -> AsyncIterator[CountingStore]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield CountingStore(RedisResultStore(client))
    await client.aclose()


MODES: dict[str, Callable[[Any], Completion]] = {
    "poll": lambda s: PollingCompletion(s, interval_s=0.005),
    "batch": lambda s: BatchCompletion(s, interval_s=0.005),
    "push": lambda s: PushCompletion(s, safety_interval_s=0.5),
    # No worker here sends replies: the generic tests see reply's safety net at work.
    "reply": lambda s: ReplyCompletion(InMemoryBroker().client(), s, safety_interval_s=0.5),
}


@pytest.fixture(params=sorted(MODES))
async def completion(request: pytest.FixtureRequest, store: CountingStore
                     ) -> AsyncIterator[Completion]:
    c = MODES[request.param](store)
    await c.start()
    yield c
    await c.close()


async def finish_later(store: CountingStore, rid: str, delay: float, *,
                       announce: bool = True) -> None:
    await asyncio.sleep(delay)
    await store.put(rid, ResultRecord(status=RUNNING, detail="r"), ttl_s=60)
    final = ResultRecord(status=SUCCESS, detail="done")
    if announce:
        await store.put(rid, final, ttl_s=60)  # writes and announces
    else:  # a final record whose notice is lost
        await store.inner._redis.set(rid, final.to_json())


async def test_a_final_record_ends_the_wait(completion: Completion, store: CountingStore) -> None:
    """The wait returns the final record soon after it is written."""
    watch = completion.watch("r1")
    writer = asyncio.ensure_future(finish_later(store, "r1", 0.05))
    record = await watch.result(2.0)
    await writer
    assert record is not None and record.status == SUCCESS


async def test_timeout_returns_the_last_record_seen(completion: Completion,
                                                    store: CountingStore) -> None:
    """No final record in time: the last record seen comes back (None if there was none)."""
    await store.put("r1", ResultRecord(status=RUNNING, detail="busy"), ttl_s=60)
    # A stray notice (not after a final write) must not end the wait.
    await store.inner._redis.publish(store.inner.finals_channel, "r1")
    watch = completion.watch("r1")
    swept = isinstance(completion, PushCompletion | ReplyCompletion)  # seen at the sweep
    record = await watch.result(0.7 if swept else 0.3)
    assert record is not None and record.status == RUNNING
    assert await completion.watch("nobody").result(0.05) is None


@pytest.mark.parametrize("mode", ["batch", "push", "reply"])
async def test_nothing_is_left_behind_after_a_timeout(store: CountingStore, mode: str) -> None:
    """After waits time out or are cancelled, the process holds no waiter for them."""
    c = MODES[mode](store)
    await c.start()
    try:
        await asyncio.gather(*(c.watch(f"t{i}").result(0.05) for i in range(10)))
        c.watch("cancelled").cancel()
        assert c._waiters.futures == {} and c._waiters.last == {}  # type: ignore[attr-defined]
    finally:
        await c.close()


async def test_push_reads_each_record_once(store: CountingStore) -> None:
    """With push, each finished request's record is read once, and nothing is polled."""
    c = PushCompletion(store, safety_interval_s=60)
    await c.start()
    try:
        watches = [c.watch(f"p{i}") for i in range(20)]
        writers = [asyncio.ensure_future(finish_later(store, f"p{i}", 0.01)) for i in range(20)]
        records = await asyncio.gather(*(w.result(2.0) for w in watches))
        await asyncio.gather(*writers)
        assert all(r is not None and r.status == SUCCESS for r in records)
        assert store.records_read == 20
        assert store.gets + store.get_manys <= 20
    finally:
        await c.close()


async def test_push_lost_notice_costs_latency_not_result(store: CountingStore) -> None:
    """A final record whose notice never came is found by the slow safety poll."""
    c = PushCompletion(store, safety_interval_s=0.1)
    await c.start()
    try:
        watch = c.watch("lost")
        await finish_later(store, "lost", 0.0, announce=False)
        record = await watch.result(2.0)
        assert record is not None and record.status == SUCCESS
    finally:
        await c.close()


async def test_batch_reads_all_waiters_with_one_mget_per_tick(store: CountingStore) -> None:
    """With batch, many waiting requests share each read: one MGET per tick, no GET."""
    c = BatchCompletion(store, interval_s=0.02)
    await c.start()
    try:
        started = time.monotonic()
        watches = [c.watch(f"b{i}") for i in range(50)]
        for i in range(50):
            await store.put(f"b{i}", ResultRecord(status=SUCCESS, detail="d"), ttl_s=60)
        records = await asyncio.gather(*(w.result(2.0) for w in watches))
        ticks = (time.monotonic() - started) / 0.02
        assert all(r is not None for r in records)
        assert store.gets == 0
        assert 1 <= store.get_manys <= ticks + 1
    finally:
        await c.close()


# --- reply: RabbitMQ Direct Reply-To on the in-memory broker ---------------------------------

REPLY_QUEUE = "reply-tests"


@dataclass
class ReplyRig:
    """An API's broker connection waiting with ReplyCompletion, and a core's connection that
    answers by hand: it takes the message, writes the final record, acks, replies."""

    server: InMemoryBroker
    api: MemoryBrokerClient
    core: MemoryBrokerClient
    store: CountingStore
    completion: ReplyCompletion

    async def request(self, rid: str) -> Delivery:
        """Publish a request as the Requester does, and take it as the core."""
        await self.api.publish(REPLY_QUEUE, rid.encode(), message_id=rid,
                               reply_to=self.completion.reply_to)
        return await get_eventually(self.core, REPLY_QUEUE)

    async def finish(self, delivery: Delivery, rid: str) -> None:
        await self.store.put(rid, ResultRecord(status=SUCCESS, detail="done"), ttl_s=60)
        await delivery.ack()
        assert delivery.reply_to is not None
        await self.core.send_reply(delivery.reply_to, rid.encode(), correlation_id=rid)


@pytest.fixture
async def reply_rig_factory(store: CountingStore) -> AsyncIterator[Callable[..., Any]]:
    rigs: list[ReplyRig] = []

    async def make(*, safety_interval_s: float) -> ReplyRig:
        server = InMemoryBroker()
        api, core = server.client(), server.client()
        for client in (api, core):
            await client.connect()
        await api.declare_queue(REPLY_QUEUE)
        completion = ReplyCompletion(api, store, safety_interval_s=safety_interval_s)
        await completion.start()
        rigs.append(ReplyRig(server, api, core, store, completion))
        return rigs[-1]

    yield make
    for rig in rigs:
        await rig.completion.close()
        await rig.api.close()
        await rig.core.close()


async def test_reply_ends_the_wait_with_one_read(reply_rig_factory: Any) -> None:
    """A reply ends the wait: the record is read once, long before the safety sweep."""
    rig = await reply_rig_factory(safety_interval_s=60)
    watch = rig.completion.watch("r1")
    delivery = await rig.request("r1")
    assert delivery.reply_to is not None and delivery.reply_to.startswith(DIRECT_REPLY_TO + ".")
    await rig.finish(delivery, "r1")
    record = await watch.result(2.0)
    assert record is not None and record.status == SUCCESS
    assert rig.completion.replies == 1
    assert rig.store.records_read == 1


async def test_replies_that_arrive_together_are_read_with_one_mget(reply_rig_factory: Any
                                                                   ) -> None:
    """Replies already there when the reader wakes are read together: one MGET, no GETs."""
    rig = await reply_rig_factory(safety_interval_s=60)
    rids = [f"m{i}" for i in range(10)]
    watches = [rig.completion.watch(rid) for rid in rids]
    deliveries = [await rig.request(rid) for rid in rids]
    for rid, delivery in zip(rids, deliveries, strict=True):
        await rig.store.put(rid, ResultRecord(status=SUCCESS, detail="done"), ttl_s=60)
        await delivery.ack()
    rig.store.gets = rig.store.get_manys = 0
    for rid, delivery in zip(rids, deliveries, strict=True):  # no await between the replies'
        assert delivery.reply_to is not None                   # deliveries: they queue up
        rig.server.reply_consumers[delivery.reply_to].deliver_later(delivery.reply_to,
                                                                    rid.encode())
    records = await asyncio.gather(*(w.result(2.0) for w in watches))
    assert all(r is not None and r.status == SUCCESS for r in records)
    assert (rig.store.gets, rig.store.get_manys) == (0, 1)


async def test_a_lost_reply_is_covered_by_the_safety_net(reply_rig_factory: Any) -> None:
    """A reply that the broker drops (fault reply_lost) costs latency, not the result."""
    rig = await reply_rig_factory(safety_interval_s=0.1)
    rig.server.faults.reply_lost.on_call(1)
    watch = rig.completion.watch("lost")
    await rig.finish(await rig.request("lost"), "lost")
    record = await watch.result(2.0)
    assert record is not None and record.status == SUCCESS
    assert rig.server.faults.reply_lost.fired == 1
    assert rig.completion.replies == 0


async def test_a_reply_nobody_waits_for_is_ignored(reply_rig_factory: Any) -> None:
    """A reply for a request this process does not wait on reads nothing from the store."""
    rig = await reply_rig_factory(safety_interval_s=60)
    watch = rig.completion.watch("waited")
    delivery = await rig.request("waited")
    assert delivery.reply_to is not None
    await rig.core.send_reply(delivery.reply_to, b"nobody", correlation_id="nobody")
    await rig.core.send_reply(delivery.reply_to, b"\xff\xfe", correlation_id="garbage")
    await rig.finish(delivery, "waited")  # replies come in order: the strays came first
    assert await watch.result(2.0) is not None
    assert rig.completion.replies == 3
    assert rig.store.records_read == 1


async def test_the_reply_consumer_comes_back_after_a_lost_connection(reply_rig_factory: Any
                                                                     ) -> None:
    """Given a request published before the API's connection dropped, its reply goes to a
    dead address and the safety net finds the result; the next publish consumes replies
    again, at a new address, and its result comes by reply."""
    rig = await reply_rig_factory(safety_interval_s=0.2)
    before = rig.completion.watch("before")
    await rig.api.publish(REPLY_QUEUE, b"before", message_id="before",
                          reply_to=rig.completion.reply_to)
    rig.api._drop("connection lost")  # the broker closed it; nothing of the core's is touched
    old = await get_eventually(rig.core, REPLY_QUEUE)
    await rig.finish(old, "before")
    assert (await before.result(2.0)) is not None
    assert rig.completion.replies == 0

    after = rig.completion.watch("after")
    new = await rig.request("after")
    assert new.reply_to not in (None, old.reply_to)
    await rig.finish(new, "after")
    assert (await after.result(2.0)) is not None
    assert rig.completion.replies == 1


async def test_the_reply_reader_outlives_an_unexpected_error(reply_rig_factory: Any,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    """A read that fails in a way nobody mapped does not end the reader: the next reply is
    read as usual."""
    rig = await reply_rig_factory(safety_interval_s=60)
    real_get = rig.store.get
    failures = [RuntimeError("the handler is closed")]

    async def get_once_broken(rid: str) -> ResultRecord | None:
        if failures:
            raise failures.pop()
        return await real_get(rid)

    monkeypatch.setattr(rig.store, "get", get_once_broken)
    first, second = rig.completion.watch("first"), rig.completion.watch("second")
    await rig.finish(await rig.request("first"), "first")
    await asyncio.sleep(0.05)
    await rig.finish(await rig.request("second"), "second")
    assert (await second.result(2.0)) is not None
    assert not failures and rig.completion.replies == 2
    first.cancel()


async def test_close_cancels_the_reply_consumer_and_the_tasks(reply_rig_factory: Any) -> None:
    """After close, the completion's tasks are done and the client consumes no replies: a
    publish with reply_to is refused, as RabbitMQ refuses it."""
    rig = await reply_rig_factory(safety_interval_s=60)
    tasks = list(rig.completion._tasks)
    await rig.completion.close()
    assert tasks and all(t.done() for t in tasks)
    with pytest.raises(BrokerUnavailable, match="reply consumer"):
        await rig.api.publish(REPLY_QUEUE, b"x", message_id="x", reply_to=DIRECT_REPLY_TO)
