"""The RabbitMQ binding of the broker contract: clients of one real broker, own queue names."""

from __future__ import annotations

from typing import Any

import aiormq

from adapters.rabbitmq import RabbitMQBroker
from reference.ports import MessageBroker


class RabbitHarness:
    name = "rabbitmq"

    def __init__(self, url: str, unique: str) -> None:
        self.url = url
        self.queue = f"contract-{unique}"
        self._clients: list[Any] = []

    async def client(self, *, delivery_limit: int | None = None) -> MessageBroker:
        if delivery_limit is None:
            client = RabbitMQBroker(self.url)
        else:
            client = RabbitMQBroker(self.url, queue_type="quorum", delivery_limit=delivery_limit)
        await client.connect()
        self._clients.append(client)
        return client

    async def cleanup(self) -> None:
        for client in self._clients:
            await client.close()
        conn = await aiormq.connect(self.url)
        channel = await conn.channel()
        for name in (self.queue, self.queue + ".dlq", self.queue + "-nobody"):
            await channel.queue_delete(name)
        await conn.close()
