"""Factory behind redis://, rediss:// and unix:// URLs.

Detection bounds for a link that goes silent without closing (packets dropped, no FIN/RST):

- a command fails (redis TimeoutError, so StoreUnavailable) SOCKET_TIMEOUT_S after it was sent,
  on a pooled connection or on a new one (the handshake is bounded by the same timeout);
- a pub/sub subscription reads nothing from a silent link and would wait for ever: redis-py's
  health check only *sends* a PING after `health_check_interval` of quiet, and nothing waits
  for the answer. `WatchedPubSub` waits for it: after PUBSUB_HEALTH_CHECK_S without a reply it
  pings, and if no reply at all comes within PUBSUB_REPLY_TIMEOUT_S more, the read raises
  redis TimeoutError and drops the connection. A subscriber that keeps reading notices a silent
  link within PUBSUB_HEALTH_CHECK_S + PUBSUB_REPLY_TIMEOUT_S.

rediss:// uses the one SSLContext of `adapters.tls` (REFERENCE_TLS_*; the server's certificate
and hostname are always verified), shared by every connection of the pool (redis-py would
otherwise build one per connection from file names). A TLS failure that retrying cannot mend
(certificate verify failed, client certificate refused) ends the start-up PING with one
TlsStartupError line instead of retries; after the first PING answered it is an outage like
any other.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import SSLConnection
from redis.exceptions import TimeoutError as RedisTimeoutError

from reference.adapters import tls
from reference.adapters.redis_keys import users_namespace
from reference.adapters.redis_results import RedisClient, RedisResultStore
from reference.adapters.redis_users import RedisUserRepository
from reference.errors import StoreUnavailable
from reference.settings import Settings

POOL_TIMEOUT_S = 5.0
SOCKET_TIMEOUT_S = 2.0  # a command's reply (and a connection's handshake) must come within this
HEALTH_CHECK_S = 30  # a pooled connection idle this long is PINGed before its next command
PUBSUB_HEALTH_CHECK_S = 2.0  # a subscription quiet this long sends a PING...
PUBSUB_REPLY_TIMEOUT_S = 2.0  # ...and hears something back within this, or is lost
REDISS_PORT = 6379


class WatchedPubSub(PubSub):
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
        return WatchedPubSub(self.connection_pool, event_dispatcher=self._event_dispatcher,
                             **kwargs)


class TlsConnection(SSLConnection):
    """A rediss:// connection that uses the SSLContext it is given (one for the whole pool)."""

    def __init__(self, *, tls_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tls_context = tls_context

    def _connection_arguments(self) -> Mapping[str, Any]:
        # asyncio.open_connection: server_hostname defaults to host, so it is verified.
        return {"host": self.host, "port": self.port, "ssl": self.tls_context}


def redis_client(url: str, *, max_connections: int,
                 ssl_context: ssl.SSLContext | None = None) -> Redis:
    """A client on a blocking pool for `url`. rediss:// connections use `ssl_context`
    (`adapters.tls.client_context`), by default one that trusts the system trust store."""
    # A blocking pool waits for a free connection instead of failing under load.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S,
    )
    if pool.connection_class is SSLConnection:  # rediss://
        pool.connection_class = TlsConnection
        pool.connection_kwargs["tls_context"] = ssl_context or tls.client_context(Settings())
    return WatchedRedis(connection_pool=pool)


class TlsRedisResultStore(RedisResultStore):
    """The result store on rediss://: until a PING has been answered once, a TLS failure that
    retrying cannot mend is one TlsStartupError line (see adapters.tls)."""

    def __init__(self, client: RedisClient, *, key_prefix: str, server: str,
                 settings: Settings) -> None:
        super().__init__(client, key_prefix=key_prefix)
        self._server = server
        self._settings = settings
        self._reached = False

    async def ping(self) -> None:
        try:
            await super().ping()
        except StoreUnavailable as exc:
            fatal = (None if self._reached else
                     tls.handshake_failure(exc, server=self._server, settings=self._settings))
            if fatal is None:
                raise
            raise fatal from None
        self._reached = True


def pool_size(settings: Settings) -> int:
    return max(32, 2 * settings.concurrency)


def redis_stores(settings: Settings, memory: Any) -> tuple[RedisResultStore, RedisUserRepository]:
    url = settings.store_url
    results: RedisResultStore
    if urlsplit(url).scheme == "rediss":
        tls.reject_url_options(url, (), prefix="ssl")
        client = redis_client(url, max_connections=pool_size(settings),
                              ssl_context=tls.client_context(settings))
        results = TlsRedisResultStore(
            client, key_prefix=settings.key_prefix, settings=settings,
            server=f"redis at {tls.server_name(url, REDISS_PORT)}")
    else:
        client = redis_client(url, max_connections=pool_size(settings))
        results = RedisResultStore(client, key_prefix=settings.key_prefix)
    return (
        results,
        RedisUserRepository(client, namespace=users_namespace(settings.key_prefix)),
    )
