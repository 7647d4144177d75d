"""The RabbitMQ binding of the broker contract: clients of one real broker, own queue names."""

from __future__ import annotations

from typing import Any

import aiormq

from adapters.rabbitmq import RabbitMQBroker
from tests.contract.harness import BrokerHarness


class RabbitHarness(BrokerHarness):
    name = "rabbitmq"

    def __init__(self, url: str, unique: str) -> None:
        super().__init__(unique)
        self.url = url

    def _new_client(self, delivery_limit: int | None) -> Any:
        if delivery_limit is None:
            return RabbitMQBroker(self.url)
        return RabbitMQBroker(self.url, queue_type="quorum", delivery_limit=delivery_limit)

    async def cleanup(self) -> None:
        await super().cleanup()
        conn = await aiormq.connect(self.url)
        channel = await conn.channel()
        for name in (self.queue, self.queue + ".dlq", self.queue + "-nobody"):
            await channel.queue_delete(name)
        await conn.close()
