"""A refused publish retires its channel (RabbitMQ can keep refusing on that one channel)."""

from __future__ import annotations

import aiormq
import pytest

from reference.adapters.rabbitmq import RabbitMQBroker
from reference.errors import BrokerUnavailable
from tests.helpers import eventually
from tests.system.conftest import RealBrokers

pytestmark = pytest.mark.real


async def test_a_nacked_publish_moves_publishing_to_a_new_channel(real: RealBrokers) -> None:
    """A publish nacked by the broker (a full queue that rejects publishes) raises
    BrokerUnavailable and closes that channel; the next publish goes out on a new channel
    and is confirmed once the queue has room."""
    queue = real.queue + ".full"
    raw = await aiormq.connect(real.amqp_url)
    try:
        setup = await raw.channel()
        await setup.queue_declare(queue, auto_delete=False, arguments={
            "x-max-length": 1, "x-overflow": "reject-publish"})
        broker = RabbitMQBroker(real.amqp_url)
        await broker.connect()
        try:
            await broker.publish(queue, b"first", message_id="n1")
            first_channel = broker._publisher
            assert first_channel is not None
            with pytest.raises(BrokerUnavailable, match="refused"):
                await broker.publish(queue, b"second", message_id="n2")
            assert broker._publisher is None  # the next publish opens another
            await eventually(lambda: _true(first_channel.is_closed))  # closed in the background
            await setup.queue_purge(queue)
            await broker.publish(queue, b"third", message_id="n3")
            assert broker._publisher is not None and broker._publisher is not first_channel
            got = await setup.basic_get(queue, no_ack=True)
            assert got.body == b"third"
        finally:
            await broker.close()
            await setup.queue_delete(queue)
    finally:
        await raw.close()


async def _true(value: bool) -> bool:
    return value
