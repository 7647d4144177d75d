"""Factory behind redis+cluster:// and rediss+cluster:// URLs: the stores on a Redis Cluster.

`redis+cluster://[user:password@]host:port[,host:port...]`: the hosts are startup nodes (any
live one is enough; the client learns the rest from the cluster), port 6379 when left out.
`rediss+cluster://` speaks TLS to every node with the one SSLContext of `adapters.tls`
(REFERENCE_TLS_*; each node's certificate must name the address the cluster announces for
it). No database number (a cluster has only 0) and no query options.

Keys: every key of one request is in the record's hash slot (adapters/redis_keys), so each Lua
step runs on one node with EVALSHA, as on a single Redis; the users of the example domain are
all in one slot (`<prefix>{reference:users}:`), by design of the example. `get_many` groups its
keys by slot (one MGET per slot, pipelined per node).

Bounds, as adapters/redis_wiring's: SOCKET_TIMEOUT_S for a reply and for a connection's
handshake, HEALTH_CHECK_S for an idle connection, and `pool_size(settings)` connections per
node; a command waits up to POOL_TIMEOUT_S for one of them, then fails (StoreUnavailable).

Push notices: the Lua steps PUBLISH on classic pub/sub, which a cluster broadcasts over its bus
to every node, so one subscription to any one node hears every notice. Each subscription is a
connection of its own to a node taken in turn from the cluster's current node list (primaries
and replicas), watched for a silent link as on a single Redis (redis_wiring.WatchedPubSub). A
subscription that fails is dropped by its owner (reference/completion.py,
reference/api/events.py), and the next one goes to the next node. The cost: every notice
crosses the bus to every node, so notices grow with the number of nodes, not with the shard
that wrote them. Sharded pub/sub (SPUBLISH/SSUBSCRIBE) would keep a notice on its shard, but a
subscriber would then need one channel per slot (or per shard) and a subscription on every
shard: that is the scale-out path, not built.

Failover: while a primary is down and until its replica is promoted (about the node timeout
plus an election), the calls on its slots fail (redis-py's ConnectionError, and sometimes an
AttributeError from a connection torn down under it); adapters/redis_errors maps every one of
them to StoreUnavailable, so the API and the workers behave as in any store outage (503 for
new requests, claims handed back, reconnect with backoff). After the promotion the client
learns the new layout and the calls succeed again. Redis replicates asynchronously: a write that
a primary acknowledged in its last moments may be missing on the replica promoted in its place
(a final record too, whose message was acknowledged already). WAIT after each final write
would narrow that window at the cost of a round trip per request: not done.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import ssl
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import ConnectionPool, RedisCluster
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from reference.adapters import tls
from reference.adapters.redis_keys import users_namespace
from reference.adapters.redis_results import RedisResultStore
from reference.adapters.redis_users import RedisUserRepository
from reference.adapters.redis_wiring import (
    HEALTH_CHECK_S,
    POOL_TIMEOUT_S,
    SOCKET_TIMEOUT_S,
    TlsConnection,
    TlsRedisResultStore,
    WatchedPubSub,
    pool_size,
)
from reference.bootstrap import url_hosts
from reference.errors import ConfigError
from reference.settings import Settings

DEFAULT_PORT = 6379

# Set while a command holds a permit, so that what it runs inside (a pipeline's redirected
# commands, a script's SCRIPT LOAD) does not wait for a second one.
_HOLDING: ContextVar[bool] = ContextVar("redis_cluster_permit", default=False)


class BoundedRedisCluster(RedisCluster):
    """redis-py's cluster client, with two changes:

    - a command waits (up to POOL_TIMEOUT_S) for a free connection instead of failing at once
      when a node's `max_connections` are all in use. One permit per connection of a node: a
      command, a pipeline or a script uses at most one connection on each node at a time, so
      `max_connections` permits never ask a node for more;
    - a command learns the cluster's layout before it is routed. redis-py 8.1 picks the target
      node first, and without a layout (before the first command, and again after anything
      made it forget it: CLUSTERDOWN in a failover, every fifth MOVED) a keyed command goes to
      a random node. Under concurrency that is a storm of MOVED replies, each fifth of which
      closes every connection of the client, those in use by other commands too (which then
      fail with "'NoneType' object has no attribute 'writelines'")."""

    def __init__(self, *, max_connections: int, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._permits = asyncio.Semaphore(max_connections)

    @contextlib.asynccontextmanager
    async def permit(self) -> AsyncIterator[None]:
        if _HOLDING.get():
            yield
            return
        try:
            async with asyncio.timeout(POOL_TIMEOUT_S):
                await self._permits.acquire()
        except TimeoutError:
            raise RedisConnectionError(
                f"no free connection to the cluster within {POOL_TIMEOUT_S:g} s") from None
        token = _HOLDING.set(True)
        try:
            yield
        finally:
            _HOLDING.reset(token)
            self._permits.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.permit():
            await self.initialize()  # a no-op while the layout is known
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None,
                 shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py
        # (mypy takes an attribute that redis-py's stubs declare for ClusterPipeline too as
        # abstract; the class has none at run time.)
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]


class _BoundedPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True,
                      allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, BoundedRedisCluster)
        async with client.permit():
            return await super().execute(raise_on_error, allow_redirections)


class RedisClusterResultStore(RedisResultStore):
    """The result store on a Redis Cluster: RedisResultStore's steps (one slot each), with MGET
    grouped by slot and subscriptions on one node at a time."""

    def __init__(self, client: RedisCluster, *, key_prefix: str = "") -> None:
        super().__init__(client, key_prefix=key_prefix)
        self._cluster = client
        self._turn = itertools.count(random.randrange(1 << 16))  # processes start apart

    async def close(self) -> None:
        await self._cluster.aclose()

    async def _mget(self, keys: list[str]) -> list[Any]:
        """One MGET per hash slot, pipelined per node (mget_nonatomic), in the keys' order."""
        await self._cluster.initialize()  # the slot table it reads (a no-op once known)
        return await self._cluster.mget_nonatomic(keys)

    async def _pubsub(self) -> PubSub:
        """A connection of its own to the next node of the cluster's current list."""
        await self._cluster.initialize()
        nodes = sorted(self._cluster.get_nodes(), key=lambda n: n.name)
        return _node_pubsub(nodes[next(self._turn) % len(nodes)])


def _node_pubsub(node: ClusterNode) -> PubSub:
    """A watched PubSub on a one-connection pool of its own to `node`, with the node's
    connection settings (timeouts, credentials, TLS). Closing the PubSub closes its
    connection. A lost link is not retried on the same node: the owner subscribes anew, on
    the next node."""
    pool = ConnectionPool(connection_class=node.connection_class, max_connections=1,
                          **{**node.connection_kwargs, "retry": Retry(NoBackoff(), 0)})
    return WatchedPubSub(pool)


class TlsRedisClusterResultStore(TlsRedisResultStore, RedisClusterResultStore):
    """The cluster store on rediss+cluster://: a TLS failure that retrying cannot mend stops
    the start-up in one line, as on rediss:// (adapters.tls)."""


def cluster_client(url: str, *, max_connections: int,
                   ssl_context: ssl.SSLContext | None = None) -> BoundedRedisCluster:
    """A cluster client for a redis+cluster:// or rediss+cluster:// URL (ConfigError, one
    line, for what such a URL cannot have). rediss+cluster:// connections use `ssl_context`,
    by default `adapters.tls.client_context` of the environment's settings."""
    parts = urlsplit(url)
    secure = parts.scheme == "rediss+cluster"
    if parts.path not in ("", "/", "/0"):
        raise ConfigError(f"bad store URL {url!r}: a Redis Cluster has only database 0")
    if parts.query:
        raise ConfigError(f"bad store URL {url!r}: redis+cluster:// takes no query options")
    try:
        hosts = url_hosts(url)
    except ValueError as exc:
        raise ConfigError(f"bad store URL {url!r}: {exc}") from None
    client = BoundedRedisCluster(
        startup_nodes=[ClusterNode(host, port or DEFAULT_PORT) for host, port in hosts],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        max_connections=max_connections,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S,
        ssl=secure,
    )
    if secure:
        # redis-py builds an SSL context per connection from file names; every node's
        # connections use ours instead: the shared kwargs make the nodes it discovers, the
        # startup nodes were made already.
        context = ssl_context or tls.client_context(Settings())
        client.connection_kwargs.update(connection_class=TlsConnection, tls_context=context)
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = TlsConnection
            node.connection_kwargs["tls_context"] = context
    return client


def redis_cluster_stores(settings: Settings,
                         memory: Any) -> tuple[RedisClusterResultStore, RedisUserRepository]:
    url = settings.store_url
    namespace = users_namespace(settings.key_prefix)  # ConfigError for a braced prefix, first
    results: RedisClusterResultStore
    if urlsplit(url).scheme == "rediss+cluster":
        client = cluster_client(url, max_connections=pool_size(settings),
                                ssl_context=tls.client_context(settings))
        nodes = ",".join(f"{host}:{port or DEFAULT_PORT}" for host, port in url_hosts(url))
        results = TlsRedisClusterResultStore(
            client, key_prefix=settings.key_prefix, settings=settings,
            server=f"redis cluster at {nodes}")
    else:
        client = cluster_client(url, max_connections=pool_size(settings))
        results = RedisClusterResultStore(client, key_prefix=settings.key_prefix)
    return results, RedisUserRepository(client, namespace=namespace)
