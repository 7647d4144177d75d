"""The three ways to wait (poll, batch, push) against the Redis store on fakeredis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest

from reference.adapters.redis_results import RedisResultStore
from reference.completion import BatchCompletion, PollingCompletion, PushCompletion
from reference.ports import Completion
from reference.records import RUNNING, SUCCESS, ResultRecord


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
    record = await watch.result(0.3 if not isinstance(completion, PushCompletion) else 0.7)
    assert record is not None and record.status == RUNNING
    assert await completion.watch("nobody").result(0.05) is None


@pytest.mark.parametrize("mode", ["batch", "push"])
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
