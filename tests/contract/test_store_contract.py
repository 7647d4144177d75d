"""The ResultStore and UserRepository contracts, bound to fakeredis and to a real Redis here,
and to a local Redis Cluster in tests/cluster/test_redis_cluster_store.py (which runs these very
test functions with `client` and `store` fixtures of its own)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from reference.adapters.redis_keys import users_namespace
from reference.adapters.redis_results import RedisResultStore
from reference.adapters.redis_users import RedisUserRepository
from reference.adapters.redis_wiring import redis_client
from reference.errors import Conflict, NotFound
from reference.records import FAIL, QUEUED, RUNNING, SUCCESS, ResultRecord


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.real)])
async def client(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[Any]:
    if request.param == "fakeredis":
        redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        yield redis
        await redis.aclose()
        return
    redis = redis_client(request.getfixturevalue("redis_url"), max_connections=8)
    yield redis
    async for key in redis.scan_iter(match=f"t{unique}:*"):
        await redis.delete(key)
    await redis.aclose(close_connection_pool=True)


@pytest.fixture
def store(client: Any, unique: str) -> RedisResultStore:
    return RedisResultStore(client, key_prefix=f"t{unique}:")


@pytest.fixture
def users(client: Any, unique: str) -> RedisUserRepository:
    return RedisUserRepository(client, namespace=users_namespace(f"t{unique}:"))


def rec(status: str, detail: str = "", **kw: Any) -> ResultRecord:
    return ResultRecord(status=status, detail=detail, **kw)


# --- ResultStore ------------------------------------------------------------------------------


async def test_put_then_get_round_trips(store: RedisResultStore) -> None:
    """A written record reads back equal, every optional field included."""
    record = rec(SUCCESS, "done", progress=100, result={"id": 1}, owner="alice",
                 queued_at=1, started_at=2, updated_at=3, finished_at=4)
    assert await store.put("r1", record, ttl_s=60) is True
    assert await store.get("r1") == record
    assert await store.get("missing") is None


async def test_final_record_is_never_overwritten(store: RedisResultStore) -> None:
    """Once Success or Fail is stored, later writes (final or not) are refused."""
    await store.put("r1", rec(RUNNING), ttl_s=60)
    assert await store.put("r1", rec(RUNNING, progress=50), ttl_s=60) is True
    assert await store.put("r1", rec(FAIL, "first"), ttl_s=60) is True
    assert await store.put("r1", rec(SUCCESS, "second"), ttl_s=60) is False
    assert await store.put("r1", rec(RUNNING, "late progress"), ttl_s=60) is False
    assert await store.finish("r1", "w1", rec(SUCCESS, "third"), ttl_s=60) is False
    assert await store.begin("r1", "w1", rec(RUNNING), claim_ttl_s=5, running_ttl_s=60) == "final"
    stored = await store.get("r1")
    assert stored is not None and (stored.status, stored.detail) == (FAIL, "first")


async def test_create_refuses_a_taken_id(store: RedisResultStore) -> None:
    """create writes the first record of a request id, once."""
    assert await store.create("r1", rec(QUEUED, "first"), ttl_s=60) is True
    assert await store.create("r1", rec(QUEUED, "again"), ttl_s=60) is False
    stored = await store.get("r1")
    assert stored is not None and stored.detail == "first"


async def test_record_expires_after_its_ttl(store: RedisResultStore) -> None:
    """Every record has a TTL: after it, the key is gone."""
    await store.create("short", rec(QUEUED), ttl_s=0.2)
    await store.put("final", rec(SUCCESS), ttl_s=0.2)
    assert await store.get("short") is not None and await store.get("final") is not None
    await asyncio.sleep(0.4)
    assert await store.get("short") is None and await store.get("final") is None
    # The finality marker expired with its record: the id may be used afresh.
    assert await store.put("final", rec(RUNNING), ttl_s=60) is True


async def test_get_many_keeps_order_and_gaps(store: RedisResultStore) -> None:
    """get_many answers position by position, None where nothing is stored."""
    await store.put("a", rec(QUEUED, "a"), ttl_s=60)
    await store.put("c", rec(SUCCESS, "c"), ttl_s=60)
    got = await store.get_many(["a", "b", "c"])
    assert [r.detail if r else None for r in got] == ["a", None, "c"]
    assert await store.get_many([]) == []


async def test_records_of_other_producers_are_read(
    store: RedisResultStore, client: Any, unique: str
) -> None:
    """A minimal record written by another core ({status, detail}) is read as a record."""
    await client.set(f"t{unique}:ext", b'{"detail": "made elsewhere", "status": "Success"}')
    record = await store.get("ext")
    assert record is not None and record.status == SUCCESS and record.detail == "made elsewhere"


async def test_begin_claims_and_writes_running(store: RedisResultStore) -> None:
    """begin: one holder at a time; the holder may begin again; finish frees the claim."""
    running = rec(RUNNING, "running", owner="alice")
    assert await store.begin("r1", "w1", running, claim_ttl_s=5, running_ttl_s=60) == "started"
    assert await store.get("r1") == running
    assert await store.begin("r1", "w2", rec(RUNNING, "w2"), claim_ttl_s=5,
                             running_ttl_s=60) == "held"
    assert (await store.get("r1")) == running  # the refused begin wrote nothing
    assert await store.begin("r1", "w1", running, claim_ttl_s=5, running_ttl_s=60) == "started"
    assert await store.renew_claim("r1", "w2", ttl_s=5) is False
    assert await store.renew_claim("r1", "w1", ttl_s=5) is True
    await store.release_claim("r1", "w2")  # not the holder: no effect
    assert await store.begin("r1", "w2", running, claim_ttl_s=5, running_ttl_s=60) == "held"
    await store.release_claim("r1", "w1")
    assert await store.begin("r1", "w2", running, claim_ttl_s=5, running_ttl_s=60) == "started"
    assert await store.finish("r1", "w2", rec(SUCCESS, "done"), ttl_s=60) is True
    assert await store.begin("r1", "w3", running, claim_ttl_s=5, running_ttl_s=60) == "final"


async def test_claim_of_a_dead_holder_expires(store: RedisResultStore) -> None:
    """A claim that is not renewed lapses, and another worker can take it."""
    running = rec(RUNNING)
    assert await store.begin("r1", "dead", running, claim_ttl_s=0.2, running_ttl_s=60) == "started"
    await asyncio.sleep(0.4)
    assert await store.begin("r1", "alive", running, claim_ttl_s=5,
                             running_ttl_s=60) == "started"


async def test_final_records_are_announced(store: RedisResultStore) -> None:
    """A subscriber hears the id of every final record written, and only of those."""
    subscription = await store.subscribe_finals()
    try:
        await store.put("r1", rec(RUNNING), ttl_s=60)
        await store.put("r1", rec(SUCCESS), ttl_s=60)
        await store.begin("r2", "w", rec(RUNNING), claim_ttl_s=5, running_ttl_s=60)
        await store.finish("r2", "w", rec(FAIL), ttl_s=60)
        await store.put("r2", rec(SUCCESS), ttl_s=60)  # refused: not announced again
        heard = [await subscription.next(2.0) for _ in range(2)]
        # No order across requests is promised: a cluster forwards notices between its nodes.
        assert sorted(heard) == ["r1", "r2"]
        assert await subscription.next(0.2) is None
    finally:
        await subscription.close()


# --- UserRepository ---------------------------------------------------------------------------


async def test_create_get_update_delete(users: RedisUserRepository) -> None:
    """The CRUD life of one user, ids starting at 1."""
    created = await users.create("Hong", "hong@example.com", request_id="q1")
    assert created.id == 1
    assert await users.get(1) == created
    updated = await users.update(1, name="Gildong", email=None)
    assert (updated.name, updated.email) == ("Gildong", "hong@example.com")
    await users.delete(1)
    with pytest.raises(NotFound):
        await users.get(1)
    with pytest.raises(NotFound):
        await users.delete(1)
    with pytest.raises(NotFound):
        await users.update(1, name="x", email=None)


async def test_emails_are_unique(users: RedisUserRepository) -> None:
    """A second user with a taken email, by create or by update, is a Conflict."""
    await users.create("A", "a@example.com", request_id="q1")
    b = await users.create("B", "b@example.com", request_id="q2")
    with pytest.raises(Conflict):
        await users.create("C", "a@example.com", request_id="q3")
    with pytest.raises(Conflict):
        await users.update(b.id, name=None, email="a@example.com")
    moved = await users.update(b.id, name=None, email="new@example.com")
    assert moved.email == "new@example.com"
    # The old address is free again.
    c = await users.create("C", "b@example.com", request_id="q4")
    assert c.id == 3


async def test_create_is_idempotent_per_request_id(users: RedisUserRepository) -> None:
    """The same request_id creates one user, however often it runs."""
    first = await users.create("Hong", "hong@example.com", request_id="same")
    again = await users.create("Hong", "hong@example.com", request_id="same")
    assert again == first
    page, _ = await users.list(limit=10, after=None)
    assert page == [first]


async def test_concurrent_creates_with_one_email_make_one_user(users: RedisUserRepository) -> None:
    """Racing creates of one email: exactly one wins, the rest get Conflict."""
    outcomes = await asyncio.gather(
        *(users.create(f"U{i}", "race@example.com", request_id=f"r{i}") for i in range(20)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(o, Conflict) for o in outcomes if o is not winners[0])


async def test_list_pages_by_cursor(users: RedisUserRepository) -> None:
    """Pages follow id order; the last page has no next cursor; deleted users are skipped."""
    for i in range(5):
        await users.create(f"U{i}", f"u{i}@example.com", request_id=f"r{i}")
    await users.delete(2)
    first, cursor = await users.list(limit=2, after=None)
    assert [u.id for u in first] == [1, 3]
    assert cursor == 3
    second, cursor = await users.list(limit=2, after=cursor)
    assert [u.id for u in second] == [4, 5]
    assert cursor is None
