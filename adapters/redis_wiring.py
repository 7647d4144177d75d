"""Factory behind redis://, rediss:// and unix:// URLs.

Detection bounds for a link that goes silent without closing (packets dropped, no FIN/RST):

- a command fails (redis TimeoutError, so StoreUnavailable) SOCKET_TIMEOUT_S after it was sent,
  on a pooled connection or on a new one (the handshake is bounded by the same timeout);
- a pub/sub subscription reads nothing from a silent link and would wait for ever: redis-py's
  health check only *sends* a PING after `health_check_interval` of quiet, and nothing waits
  for the answer. `_WatchedPubSub` waits for it: after PUBSUB_HEALTH_CHECK_S without a reply it
  pings, and if no reply at all comes within PUBSUB_REPLY_TIMEOUT_S more, the read raises
  redis TimeoutError and drops the connection. A subscriber that keeps reading notices a silent
  link within PUBSUB_HEALTH_CHECK_S + PUBSUB_REPLY_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.exceptions import TimeoutError as RedisTimeoutError

from reference.adapters.redis_results import RedisResultStore
from reference.adapters.redis_users import RedisUserRepository
from reference.settings import Settings

POOL_TIMEOUT_S = 5.0
SOCKET_TIMEOUT_S = 2.0  # a command's reply (and a connection's handshake) must come within this
HEALTH_CHECK_S = 30  # a pooled connection idle this long is PINGed before its next command
PUBSUB_HEALTH_CHECK_S = 2.0  # a subscription quiet this long sends a PING...
PUBSUB_REPLY_TIMEOUT_S = 2.0  # ...and hears something back within this, or is lost


class _WatchedPubSub(PubSub):
    """A PubSub whose health-check PING must be answered: a silent link fails the read."""

    _ping_sent_at: float | None = None

    async def connect(self) -> None:
        await super().connect()  # type: ignore[no-untyped-call]
        conn = self.connection
        if conn is not None and conn.health_check_interval != PUBSUB_HEALTH_CHECK_S:
            # This connection only (it came from the shared pool; aclose() gives it back).
            now = asyncio.get_running_loop().time()
            conn.health_check_interval = PUBSUB_HEALTH_CHECK_S
            conn.next_health_check = min(conn.next_health_check, now + PUBSUB_HEALTH_CHECK_S)

    def _awaiting_reply(self) -> bool:
        """A health-check PING went out and nothing at all was read since."""
        conn = self.connection
        if conn is None or not conn.health_check_interval or self._ping_sent_at is None:
            return False
        # redis-py sets next_health_check = (time of the last reply read) + interval.
        last_reply = conn.next_health_check - conn.health_check_interval
        return last_reply < self._ping_sent_at

    async def check_health(self) -> None:
        conn = self.connection
        due = (conn is not None and bool(conn.health_check_interval)
               and asyncio.get_running_loop().time() > conn.next_health_check)
        await super().check_health()  # type: ignore[no-untyped-call]  # PINGs when due
        if due and not self._awaiting_reply():
            self._ping_sent_at = asyncio.get_running_loop().time()

    async def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        """As PubSub's, but each wait ends at the next health-check deadline, so a PING goes
        out on time and a missing answer is noticed on time, even by a blocking read."""
        loop = asyncio.get_running_loop()
        end = math.inf if block else loop.time() + (timeout or 0.0)
        while True:
            wait = end - loop.time()
            conn = self.connection
            if conn is not None and conn.health_check_interval:
                deadline = (self._ping_sent_at + PUBSUB_REPLY_TIMEOUT_S
                            if self._awaiting_reply() and self._ping_sent_at is not None
                            else conn.next_health_check)
                wait = min(wait, deadline - loop.time() + 0.001)
            response = await super().parse_response(block=False, timeout=max(wait, 0.0))
            if response is not None:
                return response
            await self._fail_if_unanswered()
            if loop.time() >= end:
                return None

    async def _fail_if_unanswered(self) -> None:
        sent = self._ping_sent_at
        if sent is None or not self._awaiting_reply():
            return
        silent_s = asyncio.get_running_loop().time() - sent
        if silent_s < PUBSUB_REPLY_TIMEOUT_S:
            return
        self._ping_sent_at = None
        if self.connection is not None:
            await self.connection.disconnect(nowait=True)
        raise RedisTimeoutError(
            f"no reply to a pub/sub health check in {silent_s:.1f} s: the link is silent")

    async def aclose(self) -> None:
        conn = getattr(self, "connection", None)
        if conn is not None:  # back to the pool with the pool's own health-check interval
            conn.health_check_interval = self.connection_pool.connection_kwargs.get(
                "health_check_interval", 0)
        await super().aclose()  # type: ignore[no-untyped-call]


class WatchedRedis(Redis):
    """redis.asyncio's client, with subscriptions that notice a silent link."""

    def pubsub(self, **kwargs: Any) -> PubSub:
        return _WatchedPubSub(self.connection_pool, event_dispatcher=self._event_dispatcher,
                              **kwargs)


def redis_client(url: str, *, max_connections: int) -> Redis:
    # A blocking pool waits for a free connection instead of failing under load.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S,
    )
    return WatchedRedis(connection_pool=pool)


def pool_size(settings: Settings) -> int:
    return max(32, 2 * settings.concurrency)


def redis_stores(settings: Settings, memory: Any) -> tuple[RedisResultStore, RedisUserRepository]:
    client = redis_client(settings.store_url, max_connections=pool_size(settings))
    return (
        RedisResultStore(client, key_prefix=settings.key_prefix),
        RedisUserRepository(client, namespace=settings.key_prefix + "reference:users:"),
    )
