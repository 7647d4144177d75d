"""An in-memory message broker with RabbitMQ's semantics, for one process.

`InMemoryBroker` is the server (queues live there); `MemoryBrokerClient` is one connection to
it and satisfies the MessageBroker port. What it keeps from RabbitMQ:

- a durable FIFO per queue name, declared with its dead-letter queue `<queue>.dlq`;
  declaring it again with other arguments fails, as PRECONDITION_FAILED does;
- publishing to a queue nobody declared is refused (the real adapter publishes `mandatory`);
- unsettled deliveries per consumer are bounded by its prefetch;
- a requeued message goes back to its original place in the queue (as a classic queue does;
  found by the differential test) and comes back marked redelivered;
- reject without requeue dead-letters; so does a message returned more often than the
  delivery limit allows (a quorum queue's `x-delivery-limit`);
- closing a connection hands its unsettled deliveries back, as a dying process does;
- settling a delivery twice is an error; delivery is always asynchronous, never inline;
- bodies are bytes, copied on the way in and out.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field

from reference.errors import (
    BrokerUnavailable,
    DeliveryAlreadySettled,
    QueueMismatch,
    Unroutable,
)
from reference.ports import DeliveryHandler

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Message:
    body: bytes
    message_id: str | None
    seq: int = 0  # publish order: a returned message goes back to its original place
    returns: int = 0  # times handed back after a delivery (RabbitMQ's delivery-count)
    redelivered: bool = False
    death_reason: str | None = None


@dataclass(slots=True, eq=False)
class _Queue:
    name: str
    delivery_limit: int | None
    ready: deque[_Message] = field(default_factory=deque)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()


class InMemoryBroker:
    """The server side: queues shared by every client made from it."""

    def __init__(self) -> None:
        self.queues: dict[str, _Queue] = {}
        self._seq = itertools.count(1)
        self.available = True  # tests turn it off to simulate an outage

    def client(self, *, delivery_limit: int | None = None) -> MemoryBrokerClient:
        return MemoryBrokerClient(self, delivery_limit=delivery_limit)

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
                                  death_reason=reason))
        # Notify without awaiting: dead-lettering happens inside settle paths.
        asyncio.get_running_loop().create_task(dlq.notify())


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
        self._settled = False
        self.body = bytes(message.body)
        self.redelivered = message.redelivered
        self.delivery_count = message.returns + 1
        self.message_id = message.message_id
        self.death_reason = message.death_reason

    def _settle(self) -> None:
        if self._settled:
            raise DeliveryAlreadySettled("delivery already acked or rejected")
        if not self._client.is_open:
            raise BrokerUnavailable("connection closed: the delivery was handed back")
        self._settled = True
        self._client._unsettled.discard(self)
        if self._consumer is not None:
            self._consumer.unsettled -= 1

    async def ack(self) -> None:
        self._settle()
        await self._queue.notify()

    async def reject(self, *, requeue: bool) -> None:
        self._settle()
        if requeue:
            self._client._server_return(self._queue, self._message)
        else:
            self._client.server._dead_letter(self._queue, self._message, "rejected")
        await self._queue.notify()

    def _hand_back(self) -> None:
        """The connection went away: the broker takes the message back."""
        self._settled = True
        self._client._server_return(self._queue, self._message)


class _Consumer:
    def __init__(
        self, client: MemoryBrokerClient, queue: _Queue, handler: DeliveryHandler, prefetch: int
    ) -> None:
        self.client = client
        self.queue = queue
        self.handler = handler
        self.prefetch = prefetch
        self.unsettled = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        queue = self.queue
        while True:
            async with queue.changed:
                await queue.changed.wait_for(
                    lambda: bool(queue.ready) and self.unsettled < self.prefetch
                )
                message = queue.ready.popleft()
                self.unsettled += 1
            delivery = MemoryDelivery(self.client, queue, message, self)
            self.client._unsettled.add(delivery)
            try:
                await self.handler(delivery)
            except Exception:
                log.exception("consumer handler raised; the delivery stays unsettled")

    async def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        with contextlib.suppress(ValueError):
            self.client._consumers.remove(self)


class MemoryBrokerClient:
    """One connection to an InMemoryBroker; satisfies the MessageBroker port."""

    _ids = itertools.count(1)

    def __init__(self, server: InMemoryBroker, *, delivery_limit: int | None = None) -> None:
        self.server = server
        self.delivery_limit = delivery_limit
        self.is_open = False
        self._consumers: list[_Consumer] = []
        self._unsettled: set[MemoryDelivery] = set()

    def _check(self) -> None:
        if not self.server.available:
            raise BrokerUnavailable("in-memory broker is switched off")
        if not self.is_open:
            raise BrokerUnavailable("connection is not open")

    def _queue(self, name: str) -> _Queue:
        queue = self.server.queues.get(name)
        if queue is None:
            raise Unroutable(f"no queue named {name!r}: declare it first")
        return queue

    def _server_return(self, queue: _Queue, message: _Message) -> None:
        message.returns += 1
        message.redelivered = True
        if queue.delivery_limit is not None and message.returns > queue.delivery_limit:
            self.server._dead_letter(queue, message, "delivery_limit")
        else:
            bisect.insort(queue.ready, message, key=lambda m: m.seq)

    async def connect(self) -> None:
        if not self.server.available:
            raise BrokerUnavailable("in-memory broker is switched off")
        self.is_open = True

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.cancel()
        self.is_open = False
        queues = set()
        for delivery in list(self._unsettled):
            delivery._hand_back()
            queues.add(delivery._queue)
        self._unsettled.clear()
        for queue in queues:
            await queue.notify()

    async def ping(self) -> None:
        self._check()

    async def declare_queue(self, queue: str) -> None:
        self._check()
        self.server._declare(queue, self.delivery_limit)
        self.server._declare(queue + ".dlq", None)

    async def publish(self, queue: str, body: bytes, *, message_id: str) -> None:
        self._check()
        if not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
        target = self._queue(queue)
        target.ready.append(_Message(bytes(body), message_id, seq=next(self.server._seq)))
        await asyncio.sleep(0)  # the confirm comes back later, never inline
        await target.notify()

    async def consume(self, queue: str, handler: DeliveryHandler, *, prefetch: int) -> _Consumer:
        self._check()
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        consumer = _Consumer(self, self._queue(queue), handler, prefetch)
        consumer.task = asyncio.get_running_loop().create_task(
            consumer.run(), name=f"memory-consumer-{next(self._ids)}"
        )
        self._consumers.append(consumer)
        return consumer

    async def get(self, queue: str) -> MemoryDelivery | None:
        self._check()
        target = self._queue(queue)
        await asyncio.sleep(0)
        if not target.ready:
            return None
        delivery = MemoryDelivery(self, target, target.ready.popleft(), None)
        self._unsettled.add(delivery)
        return delivery

    async def message_count(self, queue: str) -> int:
        self._check()
        return len(self._queue(queue).ready)
