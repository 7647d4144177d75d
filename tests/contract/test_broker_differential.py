"""Differential test: random broker operations on the in-memory broker and on RabbitMQ,
with every observable outcome compared (in the style of fakeredis' hypothesis tests)."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import aiormq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from adapters.rabbitmq import RabbitMQBroker
from fakes.memory_broker import InMemoryBroker
from reference.ports import Delivery, MessageBroker
from tests.conftest import AMQP_URL, require_server

pytestmark = pytest.mark.real

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 3)),
        st.tuples(st.just("get")),
        st.tuples(st.just("ack"), st.integers(0, 7)),
        st.tuples(st.just("reject"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("count")),
        st.tuples(st.just("reconnect")),
    ),
    min_size=1,
    max_size=24,
)


async def run_ops(ops: list[tuple[Any, ...]], connect: Any, settle: float) -> list[Any]:
    """Apply `ops` and return what an observer sees after each one."""
    broker: MessageBroker = await connect()
    queue = "diff"
    await broker.declare_queue(queue)
    held: list[Delivery] = []
    trace: list[Any] = []
    published = 0
    settled = False  # RabbitMQ's message_count shows a requeue a moment after the reject
    for op in ops:
        kind = op[0]
        if kind == "publish":
            for _ in range(op[1]):
                published += 1
                await broker.publish(queue, f"m{published}".encode(), message_id=str(published))
            trace.append(("published", published))
        elif kind == "get":
            d = await broker.get(queue)
            if d is not None:
                held.append(d)
            trace.append(("got", None if d is None else (d.body, d.redelivered)))
        elif kind in {"ack", "reject"} and held:
            d = held.pop(op[1] % len(held))
            if kind == "ack":
                await d.ack()
            else:
                await d.reject(requeue=op[2])
            settled = True
            trace.append((kind, d.body))
        elif kind == "count":
            if settled:
                await asyncio.sleep(settle)
                settled = False
            trace.append(("count", await broker.message_count(queue)))
        elif kind == "reconnect":
            await broker.close()
            await asyncio.sleep(settle)
            held = []
            broker = await connect()
            trace.append(("reconnected",))
    await asyncio.sleep(settle)
    trace.append(("final", await broker.message_count(queue),
                  await broker.message_count(queue + ".dlq")))
    await broker.close()
    return trace


async def both(ops: list[tuple[Any, ...]]) -> tuple[list[Any], list[Any]]:
    server = InMemoryBroker()

    async def memory() -> MessageBroker:
        client = server.client()
        await client.connect()
        return client

    vhost_queue = f"diff-{uuid.uuid4().hex[:10]}"

    async def rabbit() -> MessageBroker:
        client = RabbitMQBroker(AMQP_URL)
        await client.connect()
        return _Renamed(client, vhost_queue)

    try:
        return await run_ops(ops, memory, 0.0), await run_ops(ops, rabbit, 0.15)
    finally:
        conn = await aiormq.connect(AMQP_URL)
        channel = await conn.channel()
        await channel.queue_delete(vhost_queue)
        await channel.queue_delete(vhost_queue + ".dlq")
        await conn.close()


class _Renamed:
    """Maps the trace's queue name `diff` onto a unique real queue."""

    def __init__(self, inner: RabbitMQBroker, name: str) -> None:
        self.inner, self.name = inner, name

    def _q(self, queue: str) -> str:
        return queue.replace("diff", self.name, 1)

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def declare_queue(self, queue: str) -> None:
        await self.inner.declare_queue(self._q(queue))

    async def publish(self, queue: str, body: bytes, *, message_id: str) -> None:
        await self.inner.publish(self._q(queue), body, message_id=message_id)

    async def get(self, queue: str) -> Any:
        return await self.inner.get(self._q(queue))

    async def message_count(self, queue: str) -> int:
        return await self.inner.message_count(self._q(queue))


EXAMPLES = int(os.environ.get("REFERENCE_DIFF_EXAMPLES", "40"))


# The case that found the fake's requeue order (it put returns at the head, in return order).
@example(ops=[("publish", 3), ("get",), ("get",), ("get",), ("reject", 1, True),
              ("reject", 0, True), ("reject", 0, True), ("get",), ("get",), ("get",)])
@example(ops=[("publish", 2), ("get",), ("reconnect",), ("get",), ("get",), ("count",)])
@example(ops=[("publish", 2), ("get",), ("reject", 0, False), ("get",), ("ack", 0)])
# Found flaky in CI: a count right after a requeue (RabbitMQ shows it a moment later).
@example(ops=[("publish", 3), ("get",), ("reject", 0, True), ("count",)])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=OPS)
def test_memory_broker_matches_rabbitmq(ops: list[tuple[Any, ...]]) -> None:
    """The same operations give the same observations on the fake and on RabbitMQ."""
    require_server(AMQP_URL, 5672)
    fake, real = asyncio.run(both(ops))
    assert fake == real
