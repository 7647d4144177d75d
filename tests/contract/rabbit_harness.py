"""The RabbitMQ binding of the broker contract (clients of one real broker, own queue names),
and the RabbitMQ side of the differential test (RabbitSide: clients through a TcpProxy)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from pamqp import commands as spec

from reference.adapters.rabbitmq import RabbitMQBroker
from reference.ports import Delivery, DeliveryHandler, MessageBroker, ReplyHandler
from tests.contract.differential_model import DLQ, QUEUE, Side, attempt, eventually
from tests.contract.harness import BrokerHarness
from tests.faults import TcpProxy


class RabbitHarness(BrokerHarness):
    name = "rabbitmq"

    def __init__(self, url: str, unique: str) -> None:
        super().__init__(unique)
        self.url = url

    def _new_client(self, delivery_limit: int | None) -> Any:
        if delivery_limit is None:
            return RabbitMQBroker(self.url)
        return RabbitMQBroker(self.url, queue_type="quorum", delivery_limit=delivery_limit)

    async def lose_connection(self, client: MessageBroker) -> None:
        adapter: Any = client
        assert adapter._conn is not None
        await adapter._conn.close()  # as a node that went away: the supervisor reconnects

        async def reconnected() -> bool:
            return bool(adapter._is_open())

        assert await eventually(reconnected, bool), "the adapter did not reconnect"

    async def cleanup(self) -> None:
        await super().cleanup()
        conn = await aiormq.connect(self.url)
        channel = await conn.channel()
        for name in (self.queue, self.queue + ".dlq", self.queue + "-nobody"):
            await channel.queue_delete(name)
        await conn.close()


# --- the RabbitMQ side of the differential test ------------------------------------------------


class RenamedQueues:
    """A RabbitMQBroker that maps the trace's queue names (`diff`, `diff.dlq`) onto unique real
    queues, so that examples never share a queue."""

    def __init__(self, inner: RabbitMQBroker, name: str) -> None:
        self.inner, self.name = inner, name

    def _q(self, queue: str) -> str:
        return queue.replace(QUEUE, self.name, 1)

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    async def declare_queue(self, queue: str) -> None:
        await self.inner.declare_queue(self._q(queue))

    async def publish(self, queue: str, body: bytes, *, message_id: str,
                      reply_to: str | None = None,
                      headers: Mapping[str, str] | None = None) -> None:
        await self.inner.publish(self._q(queue), body, message_id=message_id,
                                 reply_to=reply_to, headers=headers)

    async def consume_replies(self, handler: ReplyHandler) -> Any:
        return await self.inner.consume_replies(handler)

    async def send_reply(self, address: str, body: bytes, *, correlation_id: str) -> None:
        await self.inner.send_reply(address, body, correlation_id=correlation_id)

    async def consume(self, queue: str, handler: DeliveryHandler, *, prefetch: int) -> Any:
        return await self.inner.consume(self._q(queue), handler, prefetch=prefetch)

    async def get(self, queue: str) -> Any:
        return await self.inner.get(self._q(queue))

    async def message_count(self, queue: str) -> int:
        return await self.inner.message_count(self._q(queue))


class RabbitSide(Side):
    """RabbitMQ, its clients connected through `proxy` (a cut is a TcpProxy cut); an observer
    connection of its own, straight to the broker, counts and reads the dead letters."""

    name = "rabbitmq"
    patient = True

    def __init__(self, url: str, proxy: TcpProxy, delivery_limit: int | None) -> None:
        self.url = url
        self.proxy = proxy
        self.delivery_limit = delivery_limit
        self.quorum = delivery_limit is not None
        self.real_queue = f"diff-{uuid.uuid4().hex[:12]}"
        self.adapters: list[RabbitMQBroker] = []
        self._settled_on: dict[int, AbstractChannel] = {}
        self._observer: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None

    def _q(self, queue: str) -> str:
        return queue.replace(QUEUE, self.real_queue, 1)

    async def observer(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            if self._observer is None or self._observer.is_closed:
                self._observer = await aiormq.connect(self.url)
            self._channel = await self._observer.channel()
        return self._channel

    async def new_client(self) -> tuple[MessageBroker, tuple[str, Any]]:
        url = self.proxy.url_through(self.url)
        if self.delivery_limit is None:
            adapter = RabbitMQBroker(url)
        else:
            adapter = RabbitMQBroker(url, queue_type="quorum", delivery_limit=self.delivery_limit)
        self.adapters.append(adapter)
        client = RenamedQueues(adapter, self.real_queue)
        return client, await attempt(client.connect())

    async def ready(self, queue: str, hint: Any) -> int:
        channel = await self.observer()

        async def probe() -> int:
            ok = await channel.queue_declare(self._q(queue), passive=True)
            return int(ok.message_count or 0)

        return int(await eventually(probe, lambda n: hint is None or n == hint))

    def settled(self, delivery: Delivery) -> None:
        channel = delivery._message.channel  # type: ignore[attr-defined]
        self._settled_on[id(channel)] = channel

    async def flush(self) -> None:
        """basic.ack and basic.reject have no reply: one sent just before a cut can be lost in
        flight, and the message comes back (the fake's settle never is). A call with a reply
        on the same channel, after them, means RabbitMQ has them in order before it sees the
        connection go. (Differences of that race are not what this test compares.)"""
        channels, self._settled_on = list(self._settled_on.values()), {}
        for channel in channels:
            if not channel.is_closed:
                await attempt(channel.queue_declare(self.real_queue, passive=True))

    async def cut(self, client: MessageBroker, *, outage: bool) -> None:
        self.proxy.cut()

        async def probe() -> bool:
            return (await attempt(client.ping()))[0] == "error"

        # Until the adapter has seen its connection close (aiormq learns it from the socket).
        await eventually(probe, bool)

    async def heal(self, *, outage: bool) -> None:
        self.proxy.restore()

    async def reconnected(self, client: MessageBroker, consuming: bool) -> bool:
        assert isinstance(client, RenamedQueues)
        adapter = client.inner
        if consuming:
            # Its supervisor reconnects and restores the consumer, without any call of ours.
            async def is_open() -> bool:
                return adapter._is_open()

            if await eventually(is_open, bool):
                return True
        await eventually(lambda: attempt(client.ping()), lambda o: o[0] == "ok")
        return not consuming

    async def dead_letters(self, hint: Any) -> list[tuple[Any, ...]]:
        await self.ready(DLQ, None if hint is None else len(hint))
        channel = await self.observer()
        dead: list[tuple[Any, ...]] = []
        while True:
            message = await channel.basic_get(self._q(DLQ), no_ack=True)
            if isinstance(message.delivery, spec.Basic.GetEmpty):
                return dead
            props = message.header.properties
            deaths: Any = (props.headers or {}).get("x-death") or [{}]
            reason = deaths[0].get("reason")
            if isinstance(reason, bytes):
                reason = reason.decode()
            dead.append((message.body, props.message_id, reason))

    async def cleanup(self) -> None:
        self.proxy.restore()  # an example that failed during an outage leaves it cut
        for adapter in self.adapters:
            await attempt(adapter.close())
        channel = await self.observer()
        for name in (self.real_queue, self.real_queue + ".dlq"):
            await channel.queue_delete(name)
        assert self._observer is not None
        await self._observer.close()
