"""Bindings of the broker contract: one harness per implementation of the MessageBroker port."""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

from reference.fakes.memory_broker import InMemoryBroker
from reference.ports import Delivery, MessageBroker

T = TypeVar("T")

WAIT_S = 5.0


class BrokerHarness:
    """Connected clients of one broker, all closed at cleanup; subclasses make the clients."""

    name = "abstract"

    def __init__(self, unique: str) -> None:
        self.queue = f"contract-{unique}"
        self._clients: list[Any] = []

    def _new_client(self, delivery_limit: int | None) -> Any:
        raise NotImplementedError

    async def client(self, *, delivery_limit: int | None = None) -> MessageBroker:
        client = self._new_client(delivery_limit)
        await client.connect()
        self._clients.append(client)
        return client  # type: ignore[no-any-return]

    async def cleanup(self) -> None:
        for client in self._clients:
            await client.close()

    async def lose_connection(self, client: MessageBroker) -> None:
        """The broker drops this client's connection (and only this one's); returns once the
        client has seen it and connected again."""
        raise NotImplementedError


class MemoryHarness(BrokerHarness):
    name = "memory"

    def __init__(self, unique: str) -> None:
        super().__init__(unique)
        self.server = InMemoryBroker()

    def _new_client(self, delivery_limit: int | None) -> Any:
        return self.server.client(delivery_limit=delivery_limit)

    async def lose_connection(self, client: MessageBroker) -> None:
        client._drop("connection lost")  # type: ignore[attr-defined]
        await client.ping()  # the adapter's supervisor reconnects; the fake on the next call


class _Collector(Generic[T]):
    """Collects what a consumer is handed; waits for it with a bound."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[T] = asyncio.Queue()

    async def _take(self, timeout: float) -> T:
        return await asyncio.wait_for(self.items.get(), timeout)

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await self._take(seconds)
        except TimeoutError:
            return True
        return False


class Replies(_Collector[tuple[bytes, "asyncio.Task[Any] | None"]]):
    """Collects reply bodies from `consume_replies`, with the task each came in."""

    async def __call__(self, body: bytes) -> None:
        await self.items.put((body, asyncio.current_task()))

    async def next(self, timeout: float = WAIT_S) -> bytes:
        return (await self._take(timeout))[0]


class Inbox(_Collector[Delivery]):
    """Collects deliveries from a consumer; waits for them with a bound."""

    async def __call__(self, delivery: Delivery) -> None:
        await self.items.put(delivery)

    async def next(self, timeout: float = WAIT_S) -> Delivery:
        return await self._take(timeout)


async def get_eventually(broker: MessageBroker, queue: str, timeout: float = WAIT_S) -> Delivery:
    """basic.get until a message is there (dead-lettering is asynchronous on a real broker)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        delivery = await broker.get(queue)
        if delivery is not None:
            return delivery
        if loop.time() > end:
            raise TimeoutError(f"nothing arrived in {queue} within {timeout} s")
        await asyncio.sleep(0.02)
