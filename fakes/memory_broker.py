"""An in-memory message broker with RabbitMQ's semantics, for one process.

`InMemoryBroker` is the server (queues live there); `MemoryBrokerClient` is one connection to
it, with the reconnecting behaviour of the real adapter, and satisfies the MessageBroker port.
What it keeps from RabbitMQ:

- a durable FIFO per queue name, declared with its dead-letter queue `<queue>.dlq`;
  declaring it again with other arguments fails, as PRECONDITION_FAILED does;
- publishing to a queue nobody declared is refused (the real adapter publishes `mandatory`);
- unsettled deliveries per consumer are bounded by its prefetch;
- a requeued message goes back to its original place in a classic queue, and ahead of the
  never-delivered ones, in the order returned, in a quorum queue (both found by the
  differential test); either way it comes back marked redelivered;
- reject without requeue dead-letters; so does a message returned more often than the
  delivery limit allows (a quorum queue's `x-delivery-limit`); a classic queue has no limit;
- `delivery_count` is what the adapter reads: a quorum queue's count of returns plus one, a
  classic queue's 1 or 2 (redelivered or not);
- a lost connection hands its unsettled deliveries back; settling one of them afterwards
  fails with BrokerUnavailable, as an ack on a closed channel does; the client reconnects and
  its consumers resume, as the adapter's supervisor does;
- settling a delivery twice is an error; delivery is always asynchronous, never inline;
- bodies are bytes, copied on the way in and out; `reply_to` and string headers go through;
- Direct Reply-To: a client consumes its replies (`consume_replies`) on the channel it
  publishes on; publishing with `reply_to=amq.rabbitmq.reply-to` without that consumer is a
  channel error (PRECONDITION_FAILED, BrokerUnavailable); the broker rewrites the address
  into one unique to the consumer's channel, which dies with the channel or connection (a lost
  connection, a channel the broker closed, the client closed): a reply sent to it afterwards
  is dropped silently, as are replies still on their way. The consumer is attached again
  before the next publish, at a new address. Replies are delivered by a task of their own,
  never inline, in the order sent.

Faults (`fakes.faults.BrokerFaults`, on `InMemoryBroker.faults`) are asked at every client
operation; see that module for what each one does.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from reference.backoff import stop_task
from reference.errors import (
    BrokerUnavailable,
    DeliveryAlreadySettled,
    QueueMismatch,
    Unroutable,
)
from reference.fakes.faults import BrokerFaults
from reference.ports import DIRECT_REPLY_TO, DeliveryHandler, ReplyHandler

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 5.0  # the adapter's bound on a publisher confirm
DETECTION_S = 20.0  # aiormq declares a silent link dead within 3 * (heartbeat 5 s + 1) + 2 s
RECONNECT_PAUSE_S = 0.1  # the adapter's first backoff step


@dataclass(slots=True)
class _Message:
    body: bytes
    message_id: str | None
    seq: int = 0  # publish order: a returned message goes back to its original place
    returns: int = 0  # times handed back after a delivery (RabbitMQ's delivery-count)
    redelivered: bool = False
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message in a dead-letter queue, with why it got there (`x-death` reason)."""

    body: bytes
    message_id: str | None
    reason: str  # "rejected" (reject without requeue) or "delivery_limit"


@dataclass(slots=True, eq=False)
class _Queue:
    name: str
    delivery_limit: int | None
    ready: deque[_Message] = field(default_factory=deque)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    dead: list[DeadLetter] = field(default_factory=list)

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


class InMemoryBroker:
    """The server side: queues shared by every client made from it."""

    def __init__(self, faults: BrokerFaults | None = None, *,
                 confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
                 detection_s: float = DETECTION_S) -> None:
        self.queues: dict[str, _Queue] = {}
        self.faults = faults or BrokerFaults()
        self.confirm_timeout_s = confirm_timeout_s
        self.detection_s = detection_s
        self.clients: list[MemoryBrokerClient] = []
        self.reply_consumers: dict[str, _ReplyConsumer] = {}  # by their live address
        self._seq = itertools.count(1)
        self._reply_channels = itertools.count(1)
        self._notices: set[asyncio.Task[None]] = set()
        self.faults.connection_loss.when_switched_on(lambda: self.drop_all("broker outage"))
        self.faults.blackhole.when_switched_on(self._silence_all)

    def _silence_all(self) -> None:
        for client in self.clients:
            if client.is_open:
                client._start_blackhole()

    def _notify_later(self, queue: _Queue) -> None:
        """Wake the queue's consumers from a path that cannot await (settles, drops)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # switched from outside a loop: nobody can be waiting
            return
        task = loop.create_task(queue.notify())
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    @property
    def available(self) -> bool:
        """False while a connection-loss window is on (kept for older tests)."""
        return not self.faults.connection_loss.active

    @available.setter
    def available(self, value: bool) -> None:
        if value:
            self.faults.connection_loss.off()
        else:
            self.faults.connection_loss.on()

    def client(self, *, delivery_limit: int | None = None) -> MemoryBrokerClient:
        client = MemoryBrokerClient(self, delivery_limit=delivery_limit)
        self.clients.append(client)
        return client

    def unsettled(self) -> int:
        """Deliveries handed to a consumer or a get and not settled yet, over all clients."""
        return sum(len(c._unsettled) for c in self.clients)

    def dead_letters(self, queue: str) -> list[DeadLetter]:
        """What `<queue>.dlq` holds now, with the reasons."""
        dlq = self.queues.get(queue + ".dlq")
        return [] if dlq is None else list(dlq.dead)

    def drop_all(self, reason: str) -> None:
        for client in list(self.clients):
            client._drop(reason)

    def _declare(self, name: str, delivery_limit: int | None) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = _Queue(name, delivery_limit)
        elif queue.delivery_limit != delivery_limit:
            raise QueueMismatch(
                f"queue {name!r} exists with x-delivery-limit={queue.delivery_limit}, "
                f"not {delivery_limit}"
            )
        return queue

    def _dead_letter(self, queue: _Queue, message: _Message, reason: str) -> None:
        dlq = self.queues.get(queue.name + ".dlq")
        if dlq is None:
            log.warning("dropped a dead-lettered message: %s has no dead-letter queue", queue.name)
            return
        dlq.ready.append(_Message(message.body, message.message_id, seq=next(self._seq),
                                  reply_to=message.reply_to, headers=message.headers))
        dlq.dead.append(DeadLetter(message.body, message.message_id, reason))
        self._notify_later(dlq)

    def _return(self, queue: _Queue, message: _Message) -> None:
        message.returns += 1
        message.redelivered = True
        if queue.delivery_limit is None:
            bisect.insort(queue.ready, message, key=lambda m: m.seq)
        elif message.returns > queue.delivery_limit:
            self._dead_letter(queue, message, "delivery_limit")
        else:
            # A quorum queue serves returned messages first, in the order they came back
            # (found by the differential test).
            at = next((i for i, m in enumerate(queue.ready) if not m.redelivered),
                      len(queue.ready))
            queue.ready.insert(at, message)


class MemoryDelivery:
    """One delivery; satisfies the Delivery port."""

    def __init__(
        self, client: MemoryBrokerClient, queue: _Queue, message: _Message,
        consumer: _Consumer | None,
    ) -> None:
        self._client = client
        self._queue = queue
        self._message = message
        self._consumer = consumer
        self._epoch = client.epoch
        self._channel = consumer.channel if consumer is not None else 0
        self._taken = False  # ack or reject was asked (the adapter's own check)
        self._done = False  # the broker settled it: acked, rejected or handed back
        self.body = bytes(message.body)
        self.redelivered = message.redelivered
        quorum = queue.delivery_limit is not None
        self.delivery_count = message.returns + 1 if quorum else 1 + self.redelivered
        self.message_id = message.message_id
        self.reply_to = message.reply_to
        self.headers = dict(message.headers)

    def _channel_open(self) -> bool:
        return (self._client.is_open and self._client.epoch == self._epoch
                and (self._consumer is None or self._consumer.channel == self._channel))

    async def _settle(self) -> None:
        if self._taken:
            raise DeliveryAlreadySettled("delivery already acked or rejected")
        self._taken = True
        await self._client._link()
        if not self._channel_open():
            # RabbitMQ: the channel that carried this delivery is gone, and the message with it.
            raise BrokerUnavailable("channel closed: the delivery was handed back")
        if self._client.server.faults.channel_closed.fires():
            if self._consumer is None:
                self._hand_back()
            self._client._close_channel(self._consumer)
            raise BrokerUnavailable("channel closed by the broker during a settle")
        self._done = True
        self._client._unsettled.pop(self, None)
        if self._consumer is not None:
            self._consumer.unsettled -= 1

    async def ack(self) -> None:
        await self._settle()
        await self._queue.notify()

    async def reject(self, *, requeue: bool) -> None:
        await self._settle()
        if requeue:
            self._client.server._return(self._queue, self._message)
        else:
            self._client.server._dead_letter(self._queue, self._message, "rejected")
        await self._queue.notify()

    def _hand_back(self) -> None:
        """The channel went away: the broker takes the message back."""
        if self._done:
            return
        self._done = True
        self._client._unsettled.pop(self, None)
        self._client.server._return(self._queue, self._message)


class _Consumer:
    def __init__(
        self, client: MemoryBrokerClient, queue: _Queue, handler: DeliveryHandler, prefetch: int
    ) -> None:
        self.client = client
        self.queue = queue
        self.handler = handler
        self.prefetch = prefetch
        self.unsettled = 0
        self.channel = 1  # bumped when the channel closes; its deliveries die with it
        self.attached = True
        self.task: asyncio.Task[None] | None = None

    def _wake(self) -> bool:
        """Something to do: a delivery to make, or a lost channel to attach again."""
        return self._can_deliver() or not self.attached or not self.client.is_open

    def _can_deliver(self) -> bool:
        return (bool(self.queue.ready) and self.unsettled < self.prefetch
                and self.attached and self.client.is_open)

    async def run(self) -> None:
        queue = self.queue
        faults = self.client.server.faults
        while not self.client._closed:
            if not self.client.is_open or not self.attached:
                await asyncio.sleep(RECONNECT_PAUSE_S)
                self.client._try_reopen()
                self.attached = self.client.is_open
                continue
            if faults.connection_loss.active:
                self.client.server.drop_all("broker outage")
                continue
            if faults.blackhole.active:
                self.client._start_blackhole()
                await asyncio.sleep(RECONNECT_PAUSE_S)
                continue
            async with queue.changed:
                # Bounded, so that faults switched on by a window are noticed. (Not wait_for:
                # on Python 3.11 it can swallow a cancellation that races the predicate.)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await queue.changed.wait_for(self._wake)
                if not self._can_deliver() or faults.connection_loss.active \
                        or faults.blackhole.active:
                    continue
                message = queue.ready.popleft()
                self.unsettled += 1
            delivery = MemoryDelivery(self.client, queue, message, self)
            self.client._unsettled[delivery] = None
            try:
                await self.handler(delivery)
            except Exception:
                log.exception("consumer handler raised; the delivery stays unsettled")

    def close_channel(self) -> None:
        self.channel += 1
        self.unsettled = 0
        self.attached = False
        for delivery in list(self.client._unsettled):
            if delivery._consumer is self:
                delivery._hand_back()
        self.client._notify_all()

    async def cancel(self) -> None:
        await stop_task(self.task)
        self.task = None
        with contextlib.suppress(ValueError):
            self.client._consumers.remove(self)


class _ReplyConsumer:
    """A client's consumer of its Direct Reply-To pseudo-queue; satisfies Subscription. Its
    address lives as long as the channel it was attached on."""

    def __init__(self, client: MemoryBrokerClient, handler: ReplyHandler) -> None:
        self.client = client
        self.handler = handler
        self.address: str | None = None  # None: detached (its channel went away)
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._run(), name="memory-reply-consumer")

    def attach(self) -> str:
        server = self.client.server
        self.detach()
        self.address = f"{DIRECT_REPLY_TO}.{next(server._reply_channels)}"
        server.reply_consumers[self.address] = self
        return self.address

    def detach(self) -> None:
        if self.address is not None:
            self.client.server.reply_consumers.pop(self.address, None)
            self.address = None

    def deliver_later(self, address: str, body: bytes) -> None:
        self._inbox.put_nowait((address, body))

    async def _run(self) -> None:
        while True:
            address, body = await self._inbox.get()
            if address != self.address or self.client.server.faults.blackhole.active:
                continue  # its channel went away, or the link is silent: the reply is lost
            try:
                await self.handler(body)
            except Exception:
                log.exception("reply handler raised; the reply is dropped")

    def stop(self) -> None:
        """Detach and stop at once (no await): the client closed or its process died."""
        self.detach()
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.client._replies is self:
            self.client._replies = None

    async def cancel(self) -> None:
        task = self.task
        self.stop()
        await stop_task(task)


class MemoryBrokerClient:
    """One connection to an InMemoryBroker; satisfies the MessageBroker port."""

    _ids = itertools.count(1)

    def __init__(self, server: InMemoryBroker, *, delivery_limit: int | None = None) -> None:
        self.server = server
        self.delivery_limit = delivery_limit
        self.is_open = False
        self.epoch = 0  # bumped on every lost connection
        self.reconnects = 0
        self._closed = False  # closed by its owner: no reconnecting
        self._consumers: list[_Consumer] = []
        # In delivery order (a dict): a lost connection hands them back in that order, as
        # RabbitMQ does (found by the differential test).
        self._unsettled: dict[MemoryDelivery, None] = {}
        self._blackhole: asyncio.Task[None] | None = None
        self._replies: _ReplyConsumer | None = None

    # --- connection life ----------------------------------------------------------------

    def _drop(self, reason: str) -> None:
        """The connection is lost: unsettled deliveries go back, consumers wait to resume."""
        if not self.is_open:
            return
        log.debug("in-memory broker connection lost: %s", reason)
        self.is_open = False
        self.epoch += 1
        if self._replies is not None:
            self._replies.detach()
        for consumer in self._consumers:
            consumer.unsettled = 0
            consumer.attached = False
        for delivery in list(self._unsettled):
            delivery._hand_back()
        self._unsettled.clear()
        self._notify_all()

    def _notify_all(self) -> None:
        for queue in self.server.queues.values():
            self.server._notify_later(queue)

    def _close_channel(self, consumer: _Consumer | None) -> None:
        if consumer is not None:
            consumer.close_channel()

    def _down(self) -> bool:
        faults = self.server.faults
        return faults.connection_loss.active or faults.blackhole.active

    def _try_reopen(self) -> None:
        if not self._closed and not self.is_open and not self._down():
            self.is_open = True
            self.reconnects += 1

    def _start_blackhole(self) -> asyncio.Task[None]:
        """The link went silent: after the detection bound, the connection is declared dead."""
        if self._blackhole is None or self._blackhole.done():
            self._blackhole = asyncio.get_running_loop().create_task(self._detect_silence())
        return self._blackhole

    async def _detect_silence(self) -> None:
        await asyncio.sleep(self.server.detection_s)
        if self.server.faults.blackhole.active:  # a shorter silence goes unnoticed
            self._drop("no heartbeat from the broker")

    async def _link(self) -> None:
        """Ask the faults, reconnect if the connection was lost; raise while unreachable."""
        if self._closed:
            raise BrokerUnavailable("broker client is closed")
        faults = self.server.faults
        if faults.connection_loss.fires():
            if faults.connection_loss.active:
                self.server.drop_all("broker outage")
            else:
                self._drop("connection lost")
            raise BrokerUnavailable("rabbitmq unavailable: connection lost")
        if faults.blackhole.fires():
            if self.is_open:
                await asyncio.shield(self._start_blackhole())
                # This call waited out the heartbeat bound: whatever else, the connection is
                # dead now, and its unsettled deliveries go back (found by the simulation:
                # an ack that failed this way left its delivery unsettled for ever).
                self._drop("no heartbeat from the broker")
            raise BrokerUnavailable("rabbitmq unavailable: no heartbeat (silent link)")
        if not self.is_open:
            self._try_reopen()
            if not self.is_open:
                raise BrokerUnavailable("rabbitmq unavailable: reconnecting")

    # --- the port -----------------------------------------------------------------------

    async def connect(self) -> None:
        self._closed = False
        await self._link()

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.cancel()
        if self._replies is not None:
            await self._replies.cancel()
        self._drop("closed by its owner")
        self._closed = True
        if self._blackhole is not None:
            self._blackhole.cancel()
        with contextlib.suppress(ValueError):
            self.server.clients.remove(self)

    def sever(self) -> None:
        """The process that owned this connection died: the broker sees the connection close
        and takes its unsettled deliveries back; nothing reconnects."""
        self._drop("the owning process died")
        self._closed = True
        if self._replies is not None:
            self._replies.stop()

    async def ping(self) -> None:
        await self._link()

    async def declare_queue(self, queue: str) -> None:
        await self._link()
        self.server._declare(queue, self.delivery_limit)
        self.server._declare(queue + ".dlq", None)

    async def publish(self, queue: str, body: bytes, *, message_id: str,
                      reply_to: str | None = None,
                      headers: Mapping[str, str] | None = None) -> None:
        if not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
        await self._link()
        if self._replies is not None and self._replies.address is None:
            self._replies.attach()  # the adapter consumes again on its new publishing channel
        target = self._queue(queue)
        faults = self.server.faults
        if faults.channel_closed.fires():
            if self._replies is not None:  # it was consumed on the publishing channel
                self._replies.detach()
            raise BrokerUnavailable("publisher channel closed by the broker")
        if reply_to == DIRECT_REPLY_TO:
            if self._replies is None:
                raise BrokerUnavailable("rabbitmq closed the publishing channel: "
                                        "PRECONDITION_FAILED - fast reply consumer does not exist")
            reply_to = self._replies.address
        if faults.nack.fires():
            await asyncio.sleep(0)
            raise BrokerUnavailable("broker refused the message: nack")
        target.ready.append(_Message(bytes(body), message_id, seq=next(self.server._seq),
                                     reply_to=reply_to, headers=dict(headers or {})))
        await target.notify()
        if faults.confirm_lost.fires():
            await asyncio.sleep(self.server.confirm_timeout_s)
            raise BrokerUnavailable("publish not confirmed within "
                                    f"{self.server.confirm_timeout_s:g} s")
        if faults.slow_confirm.fires():
            await asyncio.sleep(min(faults.slow_confirm.delay_s, self.server.confirm_timeout_s))
            if faults.slow_confirm.delay_s >= self.server.confirm_timeout_s:
                raise BrokerUnavailable("publish not confirmed in time")
        await asyncio.sleep(0)  # the confirm comes back later, never inline

    async def consume(self, queue: str, handler: DeliveryHandler, *, prefetch: int) -> _Consumer:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        await self._link()
        consumer = _Consumer(self, self._queue(queue), handler, prefetch)
        consumer.task = asyncio.get_running_loop().create_task(
            consumer.run(), name=f"memory-consumer-{next(self._ids)}"
        )
        self._consumers.append(consumer)
        return consumer

    async def consume_replies(self, handler: ReplyHandler) -> _ReplyConsumer:
        await self._link()
        if self._replies is not None:
            raise RuntimeError("this client consumes its replies already")
        self._replies = _ReplyConsumer(self, handler)
        self._replies.attach()
        return self._replies

    async def send_reply(self, address: str, body: bytes, *, correlation_id: str) -> None:
        if not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
        await self._link()
        if self.server.faults.reply_lost.fires():
            return
        consumer = self.server.reply_consumers.get(address)
        if consumer is not None:
            consumer.deliver_later(address, bytes(body))
            return
        queue = self.server.queues.get(address)  # the default exchange routes by queue name
        if queue is not None:
            queue.ready.append(_Message(bytes(body), None, seq=next(self.server._seq)))
            await queue.notify()
        # else: no consumer at that address (any more), not mandatory: dropped silently

    async def get(self, queue: str) -> MemoryDelivery | None:
        await self._link()
        target = self._queue(queue)
        await asyncio.sleep(0)
        if not target.ready:
            return None
        delivery = MemoryDelivery(self, target, target.ready.popleft(), None)
        self._unsettled[delivery] = None
        return delivery

    async def message_count(self, queue: str) -> int:
        await self._link()
        return len(self._queue(queue).ready)

    def _queue(self, name: str) -> _Queue:
        queue = self.server.queues.get(name)
        if queue is None:
            raise Unroutable(f"no queue named {name!r}: declare it first")
        return queue
