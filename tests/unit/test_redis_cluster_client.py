"""The Redis Cluster client of adapters/redis_cluster.py, in process (no server): what it takes
from the URL, TLS on every node, the connection bound, and every driver failure seen during a
failover mapped to StoreUnavailable. tests/cluster/ runs it against a real cluster."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import ClusterDownError
from redis.exceptions import ConnectionError as RedisConnectionError

from reference.adapters import redis_cluster
from reference.adapters.redis_cluster import (
    BoundedRedisCluster,
    RedisClusterResultStore,
    TlsRedisClusterResultStore,
    cluster_client,
    redis_cluster_stores,
)
from reference.adapters.redis_wiring import SOCKET_TIMEOUT_S, TlsConnection
from reference.errors import ConfigError, StoreUnavailable
from reference.records import RUNNING, ResultRecord
from reference.settings import Settings


def test_the_url_gives_the_startup_nodes_and_credentials() -> None:
    """Every host of the URL is a startup node (6379 when no port is given); user and
    password (percent-decoded) and the timeouts reach every connection."""
    client = cluster_client("redis+cluster://ann:p%40ss@10.0.0.1:7001,10.0.0.2,[::1]:7003/0",
                            max_connections=4)
    nodes = client.nodes_manager.startup_nodes
    assert sorted(nodes) == ["10.0.0.1:7001", "10.0.0.2:6379", "::1:7003"]
    kwargs = next(iter(nodes.values())).connection_kwargs
    assert (kwargs["username"], kwargs["password"]) == ("ann", "p@ss")
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == SOCKET_TIMEOUT_S
    assert all(n.max_connections == 4 for n in nodes.values())


@pytest.mark.parametrize(("url", "message"), [
    ("redis+cluster://h:7001/2", "only database 0"),
    ("redis+cluster://h:7001/?ssl_cert_reqs=none", "no query options"),
    ("redis+cluster://h:7001,:7002", "no host"),
])
def test_what_a_cluster_url_cannot_have_is_one_line(url: str, message: str) -> None:
    """A database other than 0, query options or an empty host: ConfigError, one line."""
    with pytest.raises(ConfigError, match=message) as refused:
        cluster_client(url, max_connections=4)
    assert "\n" not in str(refused.value)


def test_rediss_cluster_uses_the_one_tls_context_on_every_node() -> None:
    """rediss+cluster://: the startup nodes and every node learnt later connect with
    TlsConnection and the SSLContext of adapters.tls, and the store reports TLS failures at
    start-up in one line."""
    context = ssl.create_default_context()
    client = cluster_client("rediss+cluster://h1:7001,h2:7002", max_connections=4,
                            ssl_context=context)
    for node in client.nodes_manager.startup_nodes.values():
        assert node.connection_class is TlsConnection
        assert node.connection_kwargs["tls_context"] is context
    learnt = ClusterNode("h3", 7003, **client.connection_kwargs)  # as NodesManager makes them
    connection = learnt.acquire_connection()
    assert isinstance(connection, TlsConnection) and connection.tls_context is context
    results, _ = redis_cluster_stores(
        Settings(store_url="rediss+cluster://h1:7001,h2:7002"), None)
    assert isinstance(results, TlsRedisClusterResultStore)
    plain, _ = redis_cluster_stores(Settings(store_url="redis+cluster://h1:7001"), None)
    assert type(plain) is RedisClusterResultStore


# --- failures ---------------------------------------------------------------------------------


FAILOVER_ERRORS = [
    RedisConnectionError("Error 111 connecting to 127.0.0.1:7203. Connection refused."),
    AttributeError("'NoneType' object has no attribute 'writelines'"),
    ClusterDownError("The cluster is down"),
]


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A cluster store whose driver raises the given error for every command and pipeline."""

    def make(error: Exception) -> RedisClusterResultStore:
        client = cluster_client("redis+cluster://127.0.0.1:1", max_connections=4)

        async def raise_it(*args: Any, **kwargs: Any) -> Any:
            raise error

        monkeypatch.setattr(client, "initialize", lambda *a, **k: asyncio.sleep(0))
        monkeypatch.setattr(RedisCluster, "execute_command", raise_it)
        monkeypatch.setattr(client, "mget_nonatomic", raise_it)
        monkeypatch.setattr(client, "get_nodes", lambda: [ClusterNode("127.0.0.1", 1)])
        return RedisClusterResultStore(client, key_prefix="t:")

    return make


@pytest.mark.parametrize("error", FAILOVER_ERRORS, ids=lambda e: type(e).__name__)
async def test_failover_errors_are_store_unavailable(failing: Any, error: Exception) -> None:
    """What redis-py raises while a primary is down (ConnectionError, the AttributeError of a
    connection closed under a command, CLUSTERDOWN) is StoreUnavailable for every operation."""
    store = failing(error)
    running = ResultRecord(status=RUNNING, detail="")
    calls = [store.ping(), store.get("r"), store.get_many(["a", "b"]),
             store.create("r", running, ttl_s=5), store.put("r", running, ttl_s=5),
             store.begin("r", "w", running, claim_ttl_s=5, running_ttl_s=5),
             store.renew_claim("r", "w", ttl_s=5), store.release_claim("r", "w")]
    for call in calls:
        with pytest.raises(StoreUnavailable, match=type(error).__name__):
            await call


async def test_a_subscription_to_a_dead_node_is_store_unavailable(failing: Any) -> None:
    """Subscribing to a node that refuses the connection is StoreUnavailable (the caller
    drops it and subscribes again, to the next node)."""
    store = failing(FAILOVER_ERRORS[0])
    with pytest.raises(StoreUnavailable, match="SUBSCRIBE"):
        await store.subscribe_finals()


# --- the connection bound ---------------------------------------------------------------------


async def test_commands_wait_for_a_free_connection_then_fail(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With every permit held, a command waits for one: it runs when one is freed in time, and
    fails (StoreUnavailable through the store) when none is within POOL_TIMEOUT_S."""
    monkeypatch.setattr(redis_cluster, "POOL_TIMEOUT_S", 0.2)
    release = asyncio.Event()
    ran: list[tuple[Any, ...]] = []

    async def held(self: Any, *args: Any, **kwargs: Any) -> Any:
        ran.append(args)
        if args[0] == "SLOW":
            await release.wait()
        return b"PONG"

    monkeypatch.setattr(RedisCluster, "execute_command", held)
    client = cluster_client("redis+cluster://127.0.0.1:1", max_connections=1)
    monkeypatch.setattr(client, "initialize", lambda *a, **k: asyncio.sleep(0))
    store = RedisClusterResultStore(client)
    slow = asyncio.create_task(client.execute_command("SLOW"))
    await asyncio.sleep(0.01)
    with pytest.raises(StoreUnavailable, match=r"no free connection to the cluster within 0\.2 s"):
        await store.ping()
    waiting = asyncio.create_task(store.ping())
    await asyncio.sleep(0.05)
    assert [a[0] for a in ran] == ["SLOW"]  # the ping waits
    release.set()
    await slow
    await waiting
    assert [a[0] for a in ran] == ["SLOW", "PING"]


async def test_a_command_inside_a_permit_takes_no_second_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What runs inside a permitted call (a pipeline's redirected command, a script's SCRIPT
    LOAD) does not wait for a permit of its own: one permit is enough, no deadlock."""
    async def answer(self: Any, *args: Any, **kwargs: Any) -> Any:
        return b"OK"

    monkeypatch.setattr(RedisCluster, "execute_command", answer)
    client = cluster_client("redis+cluster://127.0.0.1:1", max_connections=1)
    monkeypatch.setattr(client, "initialize", lambda *a, **k: asyncio.sleep(0))
    assert isinstance(client, BoundedRedisCluster)
    async with client.permit():
        assert await asyncio.wait_for(client.execute_command("GET", "k"), 1.0) == b"OK"


async def test_a_command_learns_the_layout_before_it_is_routed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command first makes sure the client knows the cluster's layout (redis-py would
    otherwise send a keyed command to a random node)."""
    order: list[str] = []

    async def initialize(*args: Any, **kwargs: Any) -> Any:
        order.append("initialize")

    async def answer(self: Any, *args: Any, **kwargs: Any) -> Any:
        order.append(args[0])
        return b"v"

    monkeypatch.setattr(RedisCluster, "execute_command", answer)
    client = cluster_client("redis+cluster://127.0.0.1:1", max_connections=2)
    monkeypatch.setattr(client, "initialize", initialize)
    await client.execute_command("GET", "k")
    assert order == ["initialize", "GET"]
