"""RabbitMQBroker: the MessageBroker port on aiormq (amqp://, amqps://).

- publishes persistent, `mandatory` messages and waits for the publisher confirm;
- declares the queue durable with its dead-letter queue `<queue>.dlq` (classic, or quorum with
  `x-delivery-limit`); a queue that exists with other arguments is one clear QueueMismatch;
- one channel per consumer, with `basic.qos` as the prefetch bound, manual ack and reject;
- reconnects by itself with backoff and restores its consumers; while the broker is gone,
  calls fail at once with BrokerUnavailable (the API answers 503) instead of hanging;
- a URL may name several hosts, `amqp://user:pw@h1:5701,h2:5702,h3:5703/vhost` (the nodes of
  a cluster): every (re)connect tries them in turn, starting from the host after the one that
  was lost or last failed, so that API and workers move to another node by themselves when
  one dies (a host that refuses costs nothing; one that does not answer costs the 5 s connect
  timeout before the next is tried); user, password, vhost and query are the same for all;
- Direct Reply-To (`consume_replies`, `send_reply`): the reply consumer (`basic.consume` of
  `amq.rabbitmq.reply-to`, no-ack) lives on the one publishing channel, in confirm mode (RabbitMQ
  requires the channel that publishes with `reply_to=amq.rabbitmq.reply-to` to be the one that
  consumes it; confirms work on it, checked on RabbitMQ 3.10); a new publishing channel (after
  a lost connection or a channel error) consumes again before its first publish. Replies go
  out on a channel of their own, without confirms: transient, not mandatory (one to an
  address whose channel is gone is dropped by RabbitMQ, silently).

Failures are mapped by the operation that failed, not by a list of exception types: whatever
aiormq, pamqp or the event loop raise while we publish, settle, consume or declare (uvloop
raises RuntimeError on a closed transport) becomes BrokerUnavailable, except the few answers
that mean something else (a returned message is Unroutable, a queue with other arguments is a
QueueMismatch).

amqps:// uses the one SSLContext of `adapters.tls` (REFERENCE_TLS_*; the server's certificate
and hostname are always verified). A TLS failure that retrying cannot mend (certificate verify
failed, client certificate refused) ends `connect()` at start-up with one TlsStartupError line
instead of retries; after the first connection it is an outage like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from aiormq.exceptions import ChannelPreconditionFailed, DeliveryError, PublishError
from pamqp import commands as spec

from reference.adapters import tls
from reference.backoff import Backoff, keep_running, stop_task
from reference.bootstrap import url_hosts
from reference.errors import (
    BrokerUnavailable,
    DeliveryAlreadySettled,
    QueueMismatch,
    ReferenceServiceError,
    Unroutable,
)
from reference.ports import DIRECT_REPLY_TO, DeliveryHandler, ReplyHandler
from reference.settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
OPERATION_TIMEOUT_S = 5.0  # also the publisher-confirm timeout
# AMQP heartbeat, an int (aiormq reads "5.0" as 0: no heartbeat). aiormq closes a silent
# connection once no frame came for 3 * (HEARTBEAT_S + 1) = 18 s, checked every HEARTBEAT_S // 2
# s: 15.5-20 s after the link went silent. RabbitMQ drops its side after 2-3 silent heartbeats.
HEARTBEAT_S = 5
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0
RECONNECT_WAIT_S = 1.0  # how long a call waits for a reconnect that is under way
AMQP_PORT = 5672
AMQPS_PORT = 5671
# aiormq's own URL options for TLS; ours come from REFERENCE_TLS_* (adapters.tls) only.
AIORMQ_TLS_QUERY = ("cafile", "capath", "cadata", "certfile", "keyfile", "no_verify_ssl")


class _NoTransportErrorRecords(logging.Filter):
    """aiormq logs every failed connect attempt at ERROR ("error when creating transport");
    we map the failure (BrokerUnavailable, or one TlsStartupError line) and log it ourselves,
    so drop that record rather than print a second account of it (to stderr, through
    logging's last resort, when the application configured no handler for aiormq)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_NoTransportErrorRecords())


def _unavailable(exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(f"rabbitmq unavailable: {type(exc).__name__}: {exc}"[:300])


def _really_cancelled() -> bool:
    """Whether the running task is being cancelled. aiormq also raises CancelledError
    *instances* when a channel or connection it was using closes under it (seen in the
    failover test as a 500): those are failures of the operation, not cancellations."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _amqp(call: Any, *, answers: tuple[type[BaseException], ...] = ()) -> Any:
    """Await one driver operation; any failure of it is BrokerUnavailable, except `answers`:
    the broker's replies that mean something else to the caller, raised as they are."""
    passed: tuple[type[BaseException], ...] = (ReferenceServiceError, *answers)
    try:
        return await call
    except passed:
        raise
    except asyncio.CancelledError as exc:
        if _really_cancelled():
            raise
        raise _unavailable(exc) from exc
    except Exception as exc:
        raise _unavailable(exc) from exc


def candidate_urls(url: str) -> list[str]:
    """One single-host URL per host of `url`, in its order: `amqp://u:p@h1:5701,h2/vh?x=1`
    gives `amqp://u:p@h1:5701/vh?x=1` and `amqp://u:p@h2/vh?x=1`. ValueError for an empty
    host or a bad port (`reference.bootstrap.url_hosts`)."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    urls = []
    for host, port in url_hosts(url):
        name = f"[{host}]" if ":" in host else host
        netloc = f"{userinfo}{at}{name}" + ("" if port is None else f":{port}")
        urls.append(urlunsplit(parts._replace(netloc=netloc)))
    return urls


def _host_of(url: str) -> str:
    """host:port of a single-host AMQP URL, for messages."""
    return tls.server_name(url, AMQPS_PORT if urlsplit(url).scheme == "amqps" else AMQP_PORT)


def _with_heartbeat(url: str) -> str:
    """The URL with `heartbeat=HEARTBEAT_S` added to its query, unless it sets one itself."""
    parts = urlsplit(url)
    if any(name == "heartbeat" for name, _ in parse_qsl(parts.query, keep_blank_values=True)):
        return url
    query = (parts.query + "&" if parts.query else "") + f"heartbeat={int(HEARTBEAT_S)}"
    return urlunsplit(parts._replace(query=query))


class RabbitDelivery:
    """One delivery from RabbitMQ; satisfies the Delivery port."""

    def __init__(self, message: DeliveredMessage) -> None:
        self._message = message
        self._settled = False
        props = message.header.properties
        self.body: bytes = message.body
        self.redelivered = bool(message.redelivered)
        self.message_id: str | None = props.message_id
        self.reply_to: str | None = props.reply_to
        self.headers: dict[str, str] = {
            str(k): v for k, v in (props.headers or {}).items() if isinstance(v, str)}
        # Quorum queues count returns in x-delivery-count; classic queues only flag redelivery.
        count = (props.headers or {}).get("x-delivery-count")
        self.delivery_count = int(str(count)) + 1 if count is not None else 1 + self.redelivered

    def _take(self) -> tuple[AbstractChannel, int]:
        if self._settled:
            raise DeliveryAlreadySettled("delivery already acked or rejected")
        self._settled = True
        tag = self._message.delivery_tag
        assert tag is not None
        return self._message.channel, tag

    async def ack(self) -> None:
        channel, tag = self._take()
        await _amqp(channel.basic_ack(tag))

    async def reject(self, *, requeue: bool) -> None:
        channel, tag = self._take()
        await _amqp(channel.basic_reject(tag, requeue=requeue))


class _RabbitConsumer:
    def __init__(self, broker: RabbitMQBroker, queue: str, handler: DeliveryHandler,
                 prefetch: int) -> None:
        self.broker = broker
        self.queue = queue
        self.handler = handler
        self.prefetch = prefetch
        self.channel: AbstractChannel | None = None
        self.tag: str | None = None
        self.active = True
        self._reattaching: asyncio.Task[None] | None = None

    async def attach(self, connection: AbstractConnection) -> None:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=self.prefetch)
        ok = await channel.basic_consume(self.queue, self._on_message, no_ack=False)
        self.channel, self.tag = channel, ok.consumer_tag
        channel.closing.add_done_callback(lambda _: self._on_channel_closed(channel, connection))

    def _on_channel_closed(self, channel: AbstractChannel, connection: AbstractConnection) -> None:
        """A channel can close while its connection lives on (the broker closes it after a
        channel error): consume again on a new channel. A lost connection is the
        supervisor's to mend, with every consumer at once."""
        if not self.active or self.broker._closed or channel is not self.channel:
            return
        if self._reattaching is None or self._reattaching.done():
            self._reattaching = asyncio.get_running_loop().create_task(
                self._reattach(channel, connection), name="rabbitmq-consumer-reattach")

    async def _reattach(self, channel: AbstractChannel, connection: AbstractConnection) -> None:
        await asyncio.sleep(BACKOFF_INITIAL_S)  # let a connection loss show itself first
        if (not self.active or channel is not self.channel or connection.is_closed
                or connection is not self.broker._conn):
            return
        try:
            await self.attach(connection)
            log.warning("consumer channel on %s was closed by the broker; consuming again",
                        self.queue)
        except Exception as exc:  # the supervisor restores consumers with the connection
            log.warning("could not consume %s again after a channel loss: %s", self.queue, exc)

    async def _on_message(self, message: DeliveredMessage) -> None:
        if not self.active:
            return  # cancelled: the message stays unacked and returns when the channel closes
        await self.handler(RabbitDelivery(message))

    async def cancel(self) -> None:
        """Stop new deliveries; the channel stays open so in-flight work can still ack."""
        self.active = False
        with contextlib.suppress(ValueError):
            self.broker._consumers.remove(self)
        if self.channel is not None and self.tag is not None and not self.channel.is_closed:
            await _amqp(self.channel.basic_cancel(self.tag, timeout=OPERATION_TIMEOUT_S))


class _RabbitReplyConsumer:
    """The consumer of this client's Direct Reply-To pseudo-queue, on the publishing channel;
    satisfies Subscription."""

    def __init__(self, broker: RabbitMQBroker, handler: ReplyHandler) -> None:
        self.broker = broker
        self.handler = handler
        self.channel: AbstractChannel | None = None  # the channel it consumes on now
        self.tag: str | None = None
        self.active = True

    async def attach(self, channel: AbstractChannel) -> None:
        ok = await channel.basic_consume(DIRECT_REPLY_TO, self._on_message, no_ack=True,
                                         timeout=OPERATION_TIMEOUT_S)
        self.channel, self.tag = channel, ok.consumer_tag

    async def _on_message(self, message: DeliveredMessage) -> None:
        if not self.active:
            return
        try:
            await self.handler(message.body)
        except Exception:
            log.exception("reply handler raised; the reply is dropped")

    async def cancel(self) -> None:
        self.active = False
        if self.broker._replies is self:
            self.broker._replies = None
        channel, tag = self.channel, self.tag
        if channel is not None and tag is not None and not channel.is_closed:
            await _amqp(channel.basic_cancel(tag, timeout=OPERATION_TIMEOUT_S))


class RabbitMQBroker:
    def __init__(self, url: str, *, queue_type: str = "classic", delivery_limit: int = 5,
                 ssl_context: ssl.SSLContext | None = None,
                 settings: Settings | None = None) -> None:
        self._url = url
        self._urls = candidate_urls(url)
        self._next_host = 0  # where the next connect starts: after the host lost or failed
        self._tried = self._urls[0]  # the last host tried, for messages
        self._ssl_context = ssl_context  # amqps:// only; aiormq's own defaults when None
        self._settings = settings or Settings()  # for the TLS start-up message
        self._ever_connected = False
        self._queue_type = queue_type
        self._delivery_limit = delivery_limit
        self._conn: AbstractConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._publisher_lock = asyncio.Lock()
        self._utility: AbstractChannel | None = None
        self._replier: AbstractChannel | None = None
        self._channel_lock = asyncio.Lock()
        self._replies: _RabbitReplyConsumer | None = None
        self._consumers: list[_RabbitConsumer] = []
        self._lock = asyncio.Lock()
        self._retry_at = 0.0
        self._backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        self._supervisor: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()  # refused channels being closed
        self._closed = False

    # --- connection ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect now (or raise BrokerUnavailable); either way the reconnect supervisor runs
        from here on, so a client whose first connect failed still comes back by itself
        (found by the differential test)."""
        self._closed = False
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(
                keep_running(self._supervise, name="rabbitmq reconnect",
                             backoff=Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)),
                name="rabbitmq-reconnect")
        try:
            await self._connection(force=True)
        except BrokerUnavailable as exc:
            fatal = (None if self._ever_connected else tls.handshake_failure(
                exc, server=f"rabbitmq at {_host_of(self._tried)}",
                settings=self._settings))
            if fatal is None:
                raise
            await self.close()  # stop the supervisor too: nothing will retry this
            raise fatal from None

    async def close(self) -> None:
        self._closed = True
        await stop_task(self._supervisor)
        self._supervisor = None
        for task in list(self._retiring):
            await stop_task(task)
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), OPERATION_TIMEOUT_S)

    def _is_open(self) -> bool:
        return self._conn is not None and not self._conn.is_closed

    async def _connection(self, *, force: bool = False) -> AbstractConnection:
        """The open connection; reconnects at most once per backoff step, else fails fast."""
        if self._is_open():
            assert self._conn is not None
            return self._conn
        if self._closed:
            raise BrokerUnavailable("broker client is closed")
        if not force and self._lock.locked():
            # A reconnect is under way (the supervisor's, say). To a broker that answers it
            # takes milliseconds: wait for it. To one that does not, it takes its connect
            # timeout: fail soon, as docs/contract.md §8 asks of a publish while the broker is away,
            # rather than queue behind it.
            try:
                async with asyncio.timeout(RECONNECT_WAIT_S):
                    async with self._lock:
                        pass
            except TimeoutError:
                raise BrokerUnavailable("rabbitmq unavailable: reconnecting") from None
        async with self._lock:
            if self._is_open():
                assert self._conn is not None
                return self._conn
            now = time.monotonic()
            if not force and now < self._retry_at:
                raise BrokerUnavailable("rabbitmq unavailable: reconnecting")
            try:  # aiormq can fail a handshake with StopAsyncIteration too
                conn: AbstractConnection = await _amqp(self._connect_any())
            except BrokerUnavailable:
                self._retry_at = now + self._backoff.next()
                raise
            self._conn, self._publisher, self._utility, self._replier = conn, None, None, None
            self._ever_connected = True
            self._backoff.reset()
            return conn

    async def _connect_any(self) -> AbstractConnection:
        """A connection, with every consumer restored, to the first host that gives one,
        trying each host once, in turn, from `_next_host`; else an error naming each host."""
        failed: list[str] = []
        first = self._next_host
        for step in range(len(self._urls)):
            index = (first + step) % len(self._urls)
            self._tried = url = self._urls[index]
            self._next_host = (index + 1) % len(self._urls)  # if this one fails, or is lost
            try:
                conn = await asyncio.wait_for(
                    aiormq.connect(_with_heartbeat(url), context=self._ssl_context),
                    CONNECT_TIMEOUT_S)
                await self._restore_consumers(conn)
            except Exception as exc:
                failed.append(f"{_host_of(url)} "
                              f"({type(exc).__name__}: {exc})"[:200])
                if len(failed) < len(self._urls):
                    continue
                if len(failed) == 1:
                    raise
                raise ConnectionError(f"no host answered: {'; '.join(failed)}") from exc
            if failed:
                log.warning("rabbitmq connected to %s after %s failed", _host_of(url),
                            ", ".join(failed))
            return conn
        raise AssertionError("unreachable: the loop returns or raises")

    async def _restore_consumers(self, conn: AbstractConnection) -> None:
        """Attach every consumer to a new connection; all of them, or the connection is dropped."""
        try:
            for consumer in list(self._consumers):
                await consumer.attach(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        if self._consumers:
            log.info("rabbitmq connected; %d consumers restored", len(self._consumers))

    async def _supervise(self) -> None:
        """One round of the reconnect supervisor (run under `keep_running`, which outlives any
        error and backs off): wait for the connection to end, then connect again, so that
        consumers come back without a request."""
        conn = self._conn
        if conn is not None and not conn.is_closed:
            # Wait for the connection to end without taking on its reason: aiormq closes a
            # connection whose heartbeat stopped with a CancelledError *instance*, which
            # would end this task if it were raised here (found in review). asyncio.wait
            # never raises the future's exception, and a real cancellation still passes.
            await asyncio.wait({conn.closing})
            if self._closed:
                await asyncio.Event().wait()  # closing: stay here until cancelled
            log.warning("rabbitmq connection lost; reconnecting")
        await self._connection(force=True)

    async def _channel(self, attr: str) -> AbstractChannel:
        """The utility or the reply channel, opened once (one of them, whoever asks first)."""
        channel: AbstractChannel | None = getattr(self, attr)
        if channel is not None and not channel.is_closed:
            return channel
        async with self._channel_lock:
            channel = getattr(self, attr)
            if channel is None or channel.is_closed:
                conn = await self._connection()
                channel = await _amqp(conn.channel())
                setattr(self, attr, channel)
            return channel

    async def _publishing_channel(self) -> AbstractChannel:
        """The publishing channel (confirms on), consuming this client's replies when it has
        a reply consumer: a new channel consumes them before its first publish."""
        channel = self._publisher
        replies = self._replies
        if (channel is not None and not channel.is_closed
                and (replies is None or replies.channel is channel)):
            return channel
        async with self._publisher_lock:
            channel = self._publisher
            if channel is None or channel.is_closed:
                conn = await self._connection()
                channel = await _amqp(conn.channel(publisher_confirms=True,
                                                   on_return_raises=True))
                self._publisher = channel
            replies = self._replies
            if replies is not None and replies.channel is not channel:
                try:
                    await _amqp(replies.attach(channel))
                except BaseException:
                    # A failed basic.consume closes the channel (or leaves it without its
                    # reply consumer): drop it, the next call opens another.
                    self._publisher = None
                    with contextlib.suppress(Exception):
                        await channel.close()
                    raise
                log.info("consuming direct replies on the publishing channel")
            return channel

    # --- the port -----------------------------------------------------------------------

    async def ping(self) -> None:
        await self._connection()

    def _queue_arguments(self, queue: str) -> dict[str, Any]:
        args: dict[str, Any] = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue + ".dlq",
        }
        if self._queue_type == "quorum":
            args["x-queue-type"] = "quorum"
            args["x-delivery-limit"] = self._delivery_limit
        return args

    async def declare_queue(self, queue: str) -> None:
        conn = await self._connection()
        # A failed declare closes its channel: use one of its own.
        channel = await _amqp(conn.channel())
        try:
            for name, args in ((queue + ".dlq", None), (queue, self._queue_arguments(queue))):
                try:
                    await _amqp(channel.queue_declare(name, durable=True, arguments=args,
                                                      timeout=OPERATION_TIMEOUT_S),
                                answers=(ChannelPreconditionFailed,))
                except ChannelPreconditionFailed as exc:
                    raise QueueMismatch(
                        f"queue {name!r} already exists with other arguments "
                        f"({_reply_text(exc)}); delete it or use the same REFERENCE_QUEUE_TYPE "
                        f"and REFERENCE_DELIVERY_LIMIT") from None
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def publish(self, queue: str, body: bytes, *, message_id: str,
                      reply_to: str | None = None,
                      headers: Mapping[str, str] | None = None) -> None:
        properties = spec.Basic.Properties(
            delivery_mode=2,
            content_type="application/json",
            message_id=message_id,
            correlation_id=message_id,
            reply_to=reply_to,
            headers=dict(headers) if headers else None,
        )
        channel = await self._publishing_channel()
        try:
            confirm = await _amqp(channel.basic_publish(
                body, routing_key=queue, properties=properties, mandatory=True,
                timeout=OPERATION_TIMEOUT_S,
            ), answers=(DeliveryError, ChannelPreconditionFailed))  # PublishError: a return
        except PublishError as exc:
            raise Unroutable(f"no queue named {queue!r}: the broker returned the message") from exc
        except DeliveryError as exc:
            self._retire_publisher(channel)
            raise BrokerUnavailable(f"broker refused the message: {exc}") from exc
        except ChannelPreconditionFailed as exc:
            # With reply_to=amq.rabbitmq.reply-to and no reply consumer on this channel:
            # "PRECONDITION_FAILED - fast reply consumer does not exist". The channel is gone.
            raise BrokerUnavailable(f"rabbitmq closed the publishing channel: "
                                    f"{_reply_text(exc)}") from exc
        if not isinstance(confirm, spec.Basic.Ack):
            self._retire_publisher(channel)
            raise BrokerUnavailable(f"publish not confirmed: {confirm!r}")

    def _retire_publisher(self, channel: AbstractChannel) -> None:
        """Stop publishing on a channel whose publish was refused. A channel that began to
        publish to a quorum queue while its leader was being elected is refused (nacked) on
        every later publish, while a new channel on the same connection is accepted at once
        (found by the failover test: RabbitMQ 3.10, leader node killed): the next publish
        opens a new channel, and its reply consumer with it. The old channel is closed in
        the background, so that the refused request gets its 503 at once."""
        if self._publisher is channel:
            self._publisher = None
        task = asyncio.get_running_loop().create_task(_close_channel(channel),
                                                      name="rabbitmq-retire-channel")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def consume_replies(self, handler: ReplyHandler) -> _RabbitReplyConsumer:
        if self._replies is not None:
            raise RuntimeError("this client consumes its replies already")
        replies = self._replies = _RabbitReplyConsumer(self, handler)
        try:
            await self._publishing_channel()
        except BaseException:
            self._replies = None
            raise
        return replies

    async def send_reply(self, address: str, body: bytes, *, correlation_id: str) -> None:
        properties = spec.Basic.Properties(
            delivery_mode=1,
            content_type="text/plain",
            correlation_id=correlation_id,
        )
        channel = await self._channel("_replier")
        await _amqp(channel.basic_publish(body, routing_key=address, properties=properties,
                                          timeout=OPERATION_TIMEOUT_S))

    async def consume(self, queue: str, handler: DeliveryHandler, *,
                      prefetch: int) -> _RabbitConsumer:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        consumer = _RabbitConsumer(self, queue, handler, prefetch)
        conn = await self._connection()
        await _amqp(consumer.attach(conn))
        self._consumers.append(consumer)
        return consumer

    async def get(self, queue: str) -> RabbitDelivery | None:
        channel = await self._channel("_utility")
        message = await _amqp(channel.basic_get(queue, no_ack=False,
                                                timeout=OPERATION_TIMEOUT_S))
        if isinstance(message.delivery, spec.Basic.GetEmpty):
            return None
        return RabbitDelivery(message)

    async def message_count(self, queue: str) -> int:
        channel = await self._channel("_utility")
        ok = await _amqp(channel.queue_declare(queue, passive=True,
                                               timeout=OPERATION_TIMEOUT_S))
        return int(ok.message_count or 0)


async def _close_channel(channel: AbstractChannel) -> None:
    """Close a channel we no longer use; whatever that raises is nothing to report. aiormq can
    raise a CancelledError *instance* from close() when the channel's own tasks were
    cancelled (seen as a 500 in the failover test): only a real cancellation of this task
    passes."""
    try:
        await asyncio.wait_for(channel.close(), OPERATION_TIMEOUT_S)
    except (Exception, asyncio.CancelledError):
        if _really_cancelled():
            raise


def _reply_text(exc: BaseException) -> str:
    frame = exc.args[0] if exc.args else None
    return str(getattr(frame, "reply_text", exc))


def rabbitmq_broker(settings: Settings, memory: Any) -> RabbitMQBroker:
    context = None
    if urlsplit(settings.broker_url).scheme == "amqps":
        tls.reject_url_options(settings.broker_url, AIORMQ_TLS_QUERY)
        context = tls.client_context(settings)
    return RabbitMQBroker(settings.broker_url, queue_type=settings.queue_type,
                          delivery_limit=settings.quorum_delivery_limit, ssl_context=context,
                          settings=settings)
