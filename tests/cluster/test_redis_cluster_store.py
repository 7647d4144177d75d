"""The Redis stores on a local Redis Cluster (3 primaries, 3 replicas, ports 7201-7206, started
here): the store contract of tests/contract/test_store_contract.py (its very test functions,
bound here to a cluster client), one hash slot per request, notices from every shard on one
subscription, MGET across slots, and a primary killed under the stores."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import RedisCluster

from reference.adapters.redis_cluster import RedisClusterResultStore, cluster_client
from reference.adapters.redis_keys import users_namespace
from reference.adapters.redis_results import RedisFinalsSubscription
from reference.adapters.redis_users import RedisUserRepository
from reference.errors import StoreUnavailable
from reference.records import RUNNING, SUCCESS, ResultRecord
from tests.cluster.redis_cluster import LocalRedisCluster
from tests.conftest import IN_CI
from tests.contract import test_store_contract as contract

pytestmark = pytest.mark.cluster

BASE_PORT = 7201  # 7201-7206 and their bus ports; 7101-7106 belong to the failover suite
WAIT_S = 5.0
FAILOVER_S = 30.0

# The store contract, bound to the cluster: the same test functions, run with this module's
# `client` and `store` fixtures (its `users` fixture takes whatever `client` is).
globals().update({name: test for name, test in vars(contract).items()
                  if name.startswith("test_")})
users = contract.users


@pytest.fixture(scope="module")
def store_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """This module's own cluster (conftest's `redis_cluster`, on 7101+, is the failover suite's:
    the kill below must not touch it)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        message = "redis-server and redis-cli are needed for a local Redis Cluster"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with LocalRedisCluster(BASE_PORT, tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
async def client(store_cluster: LocalRedisCluster, unique: str) -> AsyncIterator[RedisCluster]:
    redis = cluster_client(store_cluster.url, max_connections=16)
    yield redis
    try:
        async for key in redis.scan_iter(match=f"t{unique}:*"):
            await redis.delete(key)
    finally:
        await redis.aclose()


@pytest.fixture
def store(client: RedisCluster, unique: str) -> RedisClusterResultStore:
    return RedisClusterResultStore(client, key_prefix=f"t{unique}:")


def rec(status: str, detail: str = "") -> ResultRecord:
    return ResultRecord(status=status, detail=detail)


def ids_on_every_primary(cluster: LocalRedisCluster, prefix: str, per_primary: int = 1
                         ) -> dict[int, list[str]]:
    """Request ids whose records fall on each primary, `per_primary` of each."""
    found: dict[int, list[str]] = {p: [] for p in cluster.primaries()}
    while any(len(rids) < per_primary for rids in found.values()):
        rid = str(uuid.uuid4())
        rids = found[cluster.primary_for_key(prefix + rid)]
        if len(rids) < per_primary:
            rids.append(rid)
    return found


async def heard(subscription: RedisFinalsSubscription, count: int) -> list[str]:
    """`count` notices, each within WAIT_S."""
    out = []
    for _ in range(count):
        rid = await subscription.next(WAIT_S)
        assert rid is not None, f"only {out} heard"
        out.append(rid)
    return out


# --- keys -------------------------------------------------------------------------------------


async def test_every_key_of_a_request_is_in_the_records_slot(
        store: RedisClusterResultStore, client: RedisCluster, unique: str) -> None:
    """BEGIN, a release, FINISH: the record, its marker, claim and start count all hash to the
    record's slot, as the cluster itself computes it."""
    rid = str(uuid.uuid4())
    assert await store.begin(rid, "w1", rec(RUNNING), claim_ttl_s=5, running_ttl_s=60) \
        == "started"
    keys = {k.decode() async for k in client.scan_iter(match=f"*{rid}*")}
    assert await store.finish(rid, "w1", rec(SUCCESS), ttl_s=60) is True
    keys |= {k.decode() async for k in client.scan_iter(match=f"*{rid}*")}
    record = f"t{unique}:{rid}"
    assert keys == {record, f"t{unique}:final:{{{record}}}", f"t{unique}:claim:{{{record}}}",
                    f"t{unique}:starts:{{{record}}}"}
    slots = {await client.cluster_keyslot(k) for k in keys}
    assert slots == {client.keyslot(record)}


async def test_the_users_domain_lives_in_one_slot(client: RedisCluster, unique: str) -> None:
    """Create, update, list and delete on the cluster; every users key is in one slot."""
    users_repo = RedisUserRepository(client, namespace=users_namespace(f"t{unique}:"))
    a = await users_repo.create("A", "a@example.com", request_id="q1")
    b = await users_repo.create("B", "b@example.com", request_id="q2")
    assert (await users_repo.update(b.id, name="Bee", email="bee@example.com")).name == "Bee"
    assert [u.id for u in (await users_repo.list(limit=10, after=None))[0]] == [a.id, b.id]
    await users_repo.delete(a.id)
    keys = [k async for k in client.scan_iter(match=f"t{unique}:*")]
    assert len(keys) >= 5  # next_id, ids, a hash, an email, the req: keys
    assert {client.keyslot(k) for k in keys} == {client.keyslot("reference:users")}


# --- across slots -----------------------------------------------------------------------------


async def test_one_subscription_hears_notices_from_every_shard(
        store: RedisClusterResultStore, store_cluster: LocalRedisCluster, unique: str) -> None:
    """Given subscriptions to finals and updates (each on one node), when records on every
    primary are begun and finished, then each subscription hears every one of them."""
    rids = [r for group in ids_on_every_primary(store_cluster, f"t{unique}:", 2).values()
            for r in group]
    finals = await store.subscribe_finals()
    updates = await store.subscribe_updates()
    try:
        for rid in rids:
            assert await store.begin(rid, "w", rec(RUNNING), claim_ttl_s=5,
                                     running_ttl_s=60) == "started"
            assert await store.finish(rid, "w", rec(SUCCESS), ttl_s=60) is True
        assert sorted(await heard(finals, len(rids))) == sorted(rids)
        assert sorted(await heard(updates, 2 * len(rids))) == sorted(rids * 2)
        assert await finals.next(0.2) is None
    finally:
        await finals.close()
        await updates.close()


async def test_subscriptions_go_round_the_nodes(
        store: RedisClusterResultStore, store_cluster: LocalRedisCluster) -> None:
    """Successive subscriptions land on every node of the cluster in turn (primaries and
    replicas alike), and one on a replica hears notices too."""
    subscriptions = [await store.subscribe_finals() for _ in store_cluster.ports]
    try:
        ports = {s._pubsub.connection.port for s in subscriptions}
        assert ports == set(store_cluster.ports)
        await store.put("r-any", rec(SUCCESS), ttl_s=60)
        for subscription in subscriptions:
            assert await subscription.next(WAIT_S) == "r-any"
    finally:
        for subscription in subscriptions:
            await subscription.close()


async def test_get_many_reads_across_slots_in_order(
        store: RedisClusterResultStore, store_cluster: LocalRedisCluster, unique: str) -> None:
    """get_many over ids on every primary answers position by position, None for gaps."""
    groups = ids_on_every_primary(store_cluster, f"t{unique}:", 10)
    rids = [r for i in range(10) for r in (g[i] for g in groups.values())]  # interleaved
    written = rids[::2]
    await asyncio.gather(*(store.put(r, rec(SUCCESS, r), ttl_s=60) for r in written))
    got = await store.get_many(rids)
    assert [g.detail if g else None for g in got] == [r if r in written else None for r in rids]


# --- failover (last: it kills a node, then restarts it) ---------------------------------------


async def _calls_until_promoted(store: RedisClusterResultStore, rid: str,
                                promoted: asyncio.Task[int]) -> tuple[int, int]:
    """Read `rid` every 50 ms until the promotion is done: (StoreUnavailable seen, successes).
    Any other exception fails the test."""
    unavailable = ok = 0
    while not promoted.done():
        try:
            await store.get(rid)
            ok += 1
        except StoreUnavailable:
            unavailable += 1
        await asyncio.sleep(0.05)
    return unavailable, ok


async def _eventually(call: Any, bound_s: float) -> Any:
    """`call()`'s result once it stops raising StoreUnavailable, within `bound_s`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + bound_s
    while True:
        try:
            return await call()
        except StoreUnavailable:
            if loop.time() > end:
                raise
            await asyncio.sleep(0.1)


async def test_a_killed_primary_is_an_outage_until_its_replica_takes_over(
        store: RedisClusterResultStore, client: RedisCluster,
        store_cluster: LocalRedisCluster, unique: str) -> None:
    """Given final records on every primary (replicated) and a subscription on each node, when
    one primary is killed: calls on its slots raise StoreUnavailable (nothing else), the
    subscription on it fails and a new one lands on a live node; after its replica's promotion
    the calls succeed, every final record is there and still final, and notices flow."""
    groups = ids_on_every_primary(store_cluster, f"t{unique}:", 3)
    rids = [r for g in groups.values() for r in g]
    for rid in rids:
        assert await store.finish(rid, "w", rec(SUCCESS, rid), ttl_s=600) is True
    victim = next(iter(groups))
    victim_rid = groups[victim][0]
    # Replication is asynchronous: let the victim's replica have every write before the kill.
    node = client.get_node(host="127.0.0.1", port=victim)
    assert node is not None
    assert await client.execute_command("WAIT", 1, 5000, target_nodes=node) >= 1
    subscriptions = [await store.subscribe_finals() for _ in store_cluster.ports]
    on_victim = [s for s in subscriptions if s._pubsub.connection.port == victim]
    assert len(on_victim) == 1  # one subscription on each node
    try:
        store_cluster.kill(victim)
        promoted = asyncio.create_task(asyncio.to_thread(store_cluster.wait_promoted, victim,
                                                         FAILOVER_S))
        unavailable, _ = await _calls_until_promoted(store, victim_rid, promoted)
        new_primary = await promoted
        assert new_primary == store_cluster.replica_of(victim)
        assert unavailable > 0  # the outage was seen, as StoreUnavailable only
        # The subscription on the dead node fails, once it has given what it had received: a
        # notice of a write made before it subscribed may come late over the cluster bus.
        with pytest.raises(StoreUnavailable):
            for _ in range(len(rids) + 1):
                assert await on_victim[0].next(WAIT_S) in rids

        # Then: reads and writes on the victim's slots succeed again, nothing final is lost.
        got = await _eventually(lambda: store.get_many(rids), WAIT_S)
        assert [r.detail if r else None for r in got] == rids
        assert await _eventually(lambda: store.begin(victim_rid, "w2", rec(RUNNING),
                                                     claim_ttl_s=5, running_ttl_s=60),
                                 WAIT_S) == "final"
        fresh = None
        for _ in store_cluster.ports:  # the rotation may offer the dead node once
            try:
                fresh = await store.subscribe_finals()
                break
            except StoreUnavailable:
                continue
        assert fresh is not None
        try:
            after = next(r for r in iter(lambda: str(uuid.uuid4()), "")
                         if store_cluster.primary_for_key(f"t{unique}:{r}") == new_primary)
            await _eventually(lambda: store.put(after, rec(SUCCESS), ttl_s=60), WAIT_S)
            while (notice := await fresh.next(WAIT_S)) != after:
                assert notice in rids  # only a late notice of a write made before the kill
        finally:
            await fresh.close()
    finally:
        for subscription in subscriptions:
            try:
                await subscription.close()
            except StoreUnavailable:
                pass
        if not store_cluster.alive(victim):
            await asyncio.to_thread(store_cluster.restart, victim)
