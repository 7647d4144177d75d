"""fakeredis behind the real adapters, with faults injected at the connection, where the real
driver meets the network.

The client is built as the real one is (`adapters.redis_wiring`): redis-py's blocking pool
and timeouts, the same retry policy (none), only with fakeredis's connection class in place of
a socket. `FaultyFakeConnection` asks `fakes.faults.StoreFaults` once per command, and raises
what redis-py raises for that fault on a real connection: ConnectionError, TimeoutError,
ReadOnlyError, OutOfMemoryError, and the RuntimeError of a transport closed under uvloop. The
adapters' error mapping is what turns them into StoreUnavailable, so it is tested too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
from fakeredis.aioredis import FakeAsyncRedisConnection
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis

from reference.adapters import redis_wiring
from reference.fakes.faults import StoreFaults

# Commands that only read: OOM and a read-only replica do not refuse them.
_READS = frozenset({b"GET", b"MGET", b"PING", b"EXISTS", b"HMGET", b"HGET", b"HGETALL",
                    b"ZRANGEBYSCORE", b"ZRANGE", b"SCAN", b"TTL", b"PTTL", b"TYPE", b"INFO",
                    b"SUBSCRIBE", b"UNSUBSCRIBE", b"PSUBSCRIBE", b"CLIENT", b"HELLO",
                    b"SELECT", b"KEYS", b"DBSIZE"})

CLOSED_TRANSPORT = ("unable to perform operation on <TCPTransport closed=True reading=False>; "
                    "the handler is closed")


def _command_name(command: Any) -> bytes:
    chunk = command[0] if isinstance(command, list | tuple) and command else command
    if isinstance(chunk, str):
        chunk = chunk.encode()
    if not isinstance(chunk, bytes | bytearray):
        return b""
    # RESP: *<n>\r\n$<len>\r\n<NAME>\r\n...
    parts = bytes(chunk).split(b"\r\n", 3)
    return parts[2].upper() if len(parts) > 2 else b""


class FaultyFakeConnection(FakeAsyncRedisConnection):
    """A fakeredis connection that shows the faults of its StoreFaults groups."""

    def __init__(self, *args: Any, faults: tuple[StoreFaults, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._faults = faults
        self._after_send: str | None = None  # what happens to the reply of the last send
        self._error_reply: redis_errors.ResponseError | None = None
        self._silent_since: float | None = None  # a subscriber's read met a black hole

    def _fires(self, name: str) -> bool:
        hit = False
        for group in self._faults:
            hit = getattr(group, name).fires() or hit
        return hit

    def _active(self, name: str) -> bool:
        return any(getattr(group, name).active for group in self._faults)

    def _delay(self, name: str) -> float:
        return max((getattr(g, name).delay_s for g in self._faults), default=0.0)

    async def _lost(self, error: BaseException) -> BaseException:
        await self.disconnect(nowait=True)
        return error

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self._after_send = None
        self._error_reply = None
        if not self._faults:
            await super().send_packed_command(command, check_health)
            return
        if self._fires("refused"):
            raise await self._lost(redis_errors.ConnectionError(
                "Error 111 connecting to fakeredis:6379. Connection refused."))
        if self._fires("reset_peer"):
            raise await self._lost(redis_errors.ConnectionError(
                "Error 104 while writing to socket. Connection reset by peer."))
        if self._fires("blackhole"):
            await asyncio.sleep(self.socket_timeout or 3600.0)
            raise await self._lost(redis_errors.TimeoutError("Timeout reading from socket"))
        name = _command_name(command)
        if self._fires("readonly") and name not in _READS:
            self._error_reply = redis_errors.ReadOnlyError(
                "You can't write against a read only replica.")
            return
        if self._fires("oom") and name not in _READS:
            self._error_reply = redis_errors.OutOfMemoryError(
                "command not allowed when used memory > 'maxmemory'.")
            return
        for after in ("closed_transport", "timeout", "latency"):
            if self._fires(after):
                self._after_send = after
                break
        await super().send_packed_command(command, check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        error, self._error_reply = self._error_reply, None
        if error is not None:
            raise error
        after, self._after_send = self._after_send, None
        if after is None and self._faults and kwargs.get("timeout") is not None:
            # A subscriber's read with no command before it: an outage drops it too, and a
            # silent link brings nothing (the subscription's health check must notice).
            if self._active("reset_peer") or self._active("refused") \
                    or self._active("closed_transport"):
                raise await self._lost(redis_errors.ConnectionError(
                    "Connection closed by server."))
            if self._active("blackhole"):
                loop = asyncio.get_running_loop()
                if self._silent_since is None:
                    self._silent_since = loop.time()
                bound = redis_wiring.PUBSUB_HEALTH_CHECK_S + redis_wiring.PUBSUB_REPLY_TIMEOUT_S
                # (A millisecond's grace: a sleep under the clock's grain would not advance it.)
                if loop.time() - self._silent_since >= bound - 0.001:
                    self._silent_since = None
                    raise await self._lost(redis_errors.TimeoutError(
                        "no reply to a pub/sub health check: the link is silent"))
                left = bound - (loop.time() - self._silent_since)
                # Never a zero sleep: a subscriber polling with timeout 0 would spin without
                # letting (virtual) time reach the bound (found by the simulation, seed 684).
                await asyncio.sleep(min(max(kwargs["timeout"] or 0.0, 0.05), left))
                return None
            self._silent_since = None
        if after == "latency":
            await asyncio.sleep(self._delay("latency"))
        try:
            reply = await super().read_response(*args, **kwargs)
        except redis_errors.ResponseError:
            # An error reply (NOSCRIPT, say) is lost with the transport like any other reply.
            if after not in ("closed_transport", "timeout"):
                raise
        if after == "closed_transport":
            raise await self._lost(RuntimeError(CLOSED_TRANSPORT))
        if after == "timeout":
            await asyncio.sleep(self.socket_timeout or 0.0)
            raise await self._lost(redis_errors.TimeoutError("Timeout reading from socket"))
        return reply


def fake_redis_client(server: fakeredis.FakeServer, *faults: StoreFaults,
                      max_connections: int, socket_timeout_s: float,
                      pool_timeout_s: float) -> Redis:
    """A redis.asyncio client on a fake server, built like the real one."""
    pool = BlockingConnectionPool(
        connection_class=FaultyFakeConnection,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        server=server,
        faults=faults,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
    )
    # redis.asyncio's own client, not the adapter's WatchedRedis: its pub/sub health check
    # spins under a virtual clock. A silent subscription is noticed by the connection below,
    # within the same bound.
    return Redis(connection_pool=pool)


def client_faults(client: Redis) -> StoreFaults:
    """The faults of this one client alone (the last group given to `fake_redis_client`)."""
    groups: tuple[StoreFaults, ...] = client.connection_pool.connection_kwargs["faults"]
    return groups[-1]
