"""The RabbitMQ adapter's edge: a CancelledError that aiormq raises is a failure, not a stop."""

from __future__ import annotations

import asyncio

import pytest

from reference.adapters.rabbitmq import _amqp
from reference.errors import BrokerUnavailable


async def _raises_cancelled() -> None:
    await asyncio.sleep(0)
    raise asyncio.CancelledError  # as aiormq does when a channel closes under a call


async def test_a_cancelled_error_from_the_driver_is_broker_unavailable() -> None:
    """An operation that raises CancelledError while nobody cancels us is BrokerUnavailable
    (the API answers 503, never a 500)."""
    with pytest.raises(BrokerUnavailable, match="CancelledError"):
        await _amqp(_raises_cancelled())


async def test_a_real_cancellation_still_passes() -> None:
    """Cancelling the task that waits on an operation cancels it, as always."""
    started = asyncio.Event()

    async def waits() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(_amqp(waits()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
