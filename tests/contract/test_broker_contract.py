"""The MessageBroker contract, written once, bound to the in-memory broker and to RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from reference.errors import BrokerUnavailable, DeliveryAlreadySettled, QueueMismatch, Unroutable
from reference.ports import DIRECT_REPLY_TO
from tests.contract.harness import WAIT_S, Inbox, MemoryHarness, Replies, get_eventually


def _rabbit_harness(request: pytest.FixtureRequest, unique: str) -> Any:
    from tests.contract.rabbit_harness import RabbitHarness

    return RabbitHarness(request.getfixturevalue("amqp_url"), unique)


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.real)])
async def harness(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[Any]:
    h = MemoryHarness(unique) if request.param == "memory" else _rabbit_harness(request, unique)
    yield h
    await h.cleanup()


async def test_publish_then_get_round_trips_bytes(harness: Any) -> None:
    """A published body comes back byte for byte, with its message id, as a first delivery."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    body = b'{"action":"x","params":{},"request_id":"r1","bin":"\xc3\xa9"}'
    await broker.publish(harness.queue, body, message_id="r1")
    delivery = await get_eventually(broker, harness.queue)
    assert delivery.body == body
    assert delivery.message_id == "r1"
    assert delivery.redelivered is False
    assert delivery.delivery_count == 1
    await delivery.ack()
    assert await broker.get(harness.queue) is None


async def test_queue_is_fifo(harness: Any) -> None:
    """Messages are consumed in the order they were published."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    for i in range(5):
        await broker.publish(harness.queue, str(i).encode(), message_id=str(i))
    inbox = Inbox()
    await broker.consume(harness.queue, inbox, prefetch=10)
    got = [await inbox.next() for _ in range(5)]
    assert [d.body for d in got] == [b"0", b"1", b"2", b"3", b"4"]
    for d in got:
        await d.ack()


async def test_message_count_counts_ready_messages(harness: Any) -> None:
    """message_count reports what waits in the queue, not what is being worked on."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    for i in range(3):
        await broker.publish(harness.queue, b"m", message_id=str(i))
    await asyncio.sleep(0.1)
    assert await broker.message_count(harness.queue) == 3
    taken = await get_eventually(broker, harness.queue)
    assert await broker.message_count(harness.queue) == 2
    await taken.ack()


async def test_prefetch_bounds_unsettled_deliveries(harness: Any) -> None:
    """A consumer never holds more unsettled deliveries than its prefetch; an ack frees a slot."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    for i in range(5):
        await broker.publish(harness.queue, str(i).encode(), message_id=str(i))
    inbox = Inbox()
    await broker.consume(harness.queue, inbox, prefetch=2)
    first, second = await inbox.next(), await inbox.next()
    assert await inbox.nothing_within(0.3)
    await first.ack()
    third = await inbox.next()
    assert third.body == b"2"
    assert await inbox.nothing_within(0.2)
    await second.ack()
    await third.ack()


async def test_requeued_message_comes_back_redelivered(harness: Any) -> None:
    """reject(requeue=True) hands the message back; it returns marked redelivered."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    await broker.publish(harness.queue, b"again", message_id="m1")
    inbox = Inbox()
    await broker.consume(harness.queue, inbox, prefetch=1)
    first = await inbox.next()
    assert first.redelivered is False
    await first.reject(requeue=True)
    second = await inbox.next()
    assert second.body == b"again"
    assert second.redelivered is True
    assert second.delivery_count >= 2
    await second.ack()


async def test_reject_without_requeue_dead_letters(harness: Any) -> None:
    """reject(requeue=False) moves the message to `<queue>.dlq`, body unchanged."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    await broker.publish(harness.queue, b"poison", message_id="p1")
    delivery = await get_eventually(broker, harness.queue)
    await delivery.reject(requeue=False)
    dead = await get_eventually(broker, harness.queue + ".dlq")
    assert dead.body == b"poison"
    await dead.ack()
    assert await broker.get(harness.queue) is None


async def test_closed_connection_hands_back_unsettled(harness: Any) -> None:
    """When a consumer's connection closes mid-work, another consumer gets the message again."""
    dying = await harness.client()
    await dying.declare_queue(harness.queue)
    await dying.publish(harness.queue, b"work", message_id="w1")
    inbox = Inbox()
    await dying.consume(harness.queue, inbox, prefetch=1)
    await inbox.next()
    await dying.close()
    survivor = await harness.client()
    again = await get_eventually(survivor, harness.queue)
    assert again.body == b"work"
    assert again.redelivered is True
    await again.ack()


async def test_settling_twice_is_an_error(harness: Any) -> None:
    """A delivery is settled once; a second ack raises instead of passing silently."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    await broker.publish(harness.queue, b"once", message_id="o1")
    delivery = await get_eventually(broker, harness.queue)
    await delivery.ack()
    with pytest.raises(DeliveryAlreadySettled):
        await delivery.ack()
    with pytest.raises(DeliveryAlreadySettled):
        await delivery.reject(requeue=True)


async def test_publish_to_undeclared_queue_is_refused(harness: Any) -> None:
    """Publishing to a queue nobody declared raises rather than losing the message."""
    broker = await harness.client()
    with pytest.raises(Unroutable):
        await broker.publish(harness.queue + "-nobody", b"lost?", message_id="u1")


async def test_redeclare_with_other_arguments_fails(harness: Any) -> None:
    """Declaring an existing queue with another delivery limit is refused, naming the queue."""
    first = await harness.client(delivery_limit=3)
    await first.declare_queue(harness.queue)
    other = await harness.client(delivery_limit=7)
    with pytest.raises(QueueMismatch, match=harness.queue):
        await other.declare_queue(harness.queue)


async def test_delivery_limit_dead_letters(harness: Any) -> None:
    """A message handed back more often than the delivery limit goes to the dead-letter queue."""
    broker = await harness.client(delivery_limit=1)
    await broker.declare_queue(harness.queue)
    await broker.publish(harness.queue, b"crashy", message_id="c1")
    inbox = Inbox()
    await broker.consume(harness.queue, inbox, prefetch=1)
    counts = []
    for _ in range(2):
        delivery = await inbox.next()
        counts.append(delivery.delivery_count)
        await delivery.reject(requeue=True)
    assert counts == [1, 2]
    assert await inbox.nothing_within(0.3)
    dead = await get_eventually(broker, harness.queue + ".dlq")
    assert dead.body == b"crashy"
    await dead.ack()


async def test_delivery_is_never_inline(harness: Any) -> None:
    """The consumer's handler never runs inside the publisher's task: delivery is asynchronous."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    handler_tasks: list[asyncio.Task[Any] | None] = []

    async def handler(delivery: Any) -> None:
        handler_tasks.append(asyncio.current_task())
        await delivery.ack()

    await broker.consume(harness.queue, handler, prefetch=1)
    await broker.publish(harness.queue, b"x", message_id="x")
    for _ in range(100):
        if handler_tasks:
            break
        await asyncio.sleep(0.02)
    assert len(handler_tasks) == 1
    assert handler_tasks[0] is not asyncio.current_task()


# --- headers and Direct Reply-To ----------------------------------------------------------------

TRACEPARENT = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


async def test_headers_go_through_as_published(harness: Any) -> None:
    """String headers (a W3C traceparent) reach the consumer as published; none: empty."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    await broker.publish(harness.queue, b"traced", message_id="t1", headers=TRACEPARENT)
    await broker.publish(harness.queue, b"plain", message_id="t2")
    traced = await get_eventually(broker, harness.queue)
    plain = await get_eventually(broker, harness.queue)
    assert (traced.headers, traced.reply_to) == (TRACEPARENT, None)
    assert (plain.headers, plain.reply_to) == ({}, None)
    await traced.ack()
    await plain.ack()


async def test_a_reply_reaches_the_publisher_at_its_rewritten_address(harness: Any) -> None:
    """A request published with reply_to=amq.rabbitmq.reply-to (confirmed) arrives with an
    address of the publisher's own; a reply sent there reaches the publisher, in another
    task than the sender's, and no other client."""
    api, core, other = await harness.client(), await harness.client(), await harness.client()
    await api.declare_queue(harness.queue)
    replies, others = Replies(), Replies()
    await api.consume_replies(replies)
    await other.consume_replies(others)
    await api.publish(harness.queue, b"req", message_id="r1", reply_to=DIRECT_REPLY_TO,
                      headers=TRACEPARENT)
    request = await get_eventually(core, harness.queue)
    assert request.reply_to is not None and request.reply_to.startswith(DIRECT_REPLY_TO + ".")
    assert request.headers == TRACEPARENT
    await request.ack()
    await core.send_reply(request.reply_to, b"r1", correlation_id="r1")
    body, task = await asyncio.wait_for(replies.items.get(), WAIT_S)
    assert body == b"r1"
    assert task is not None and task is not asyncio.current_task()
    assert await others.nothing_within(0.2)


async def test_publish_with_reply_to_needs_the_reply_consumer(harness: Any) -> None:
    """Publishing with reply_to=amq.rabbitmq.reply-to on a client that consumes no replies is
    refused (PRECONDITION_FAILED closes the channel); the client goes on publishing."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    with pytest.raises(BrokerUnavailable, match="reply consumer"):
        await broker.publish(harness.queue, b"lost", message_id="x", reply_to=DIRECT_REPLY_TO)
    await broker.publish(harness.queue, b"fine", message_id="y")
    delivery = await get_eventually(broker, harness.queue)
    assert delivery.body == b"fine"  # the refused one was not queued
    await delivery.ack()
    assert await broker.get(harness.queue) is None


async def test_a_cancelled_reply_consumer_takes_no_more_requests_with_reply_to(harness: Any
                                                                              ) -> None:
    """After the reply consumer is cancelled, a publish with reply_to is refused again."""
    broker = await harness.client()
    await broker.declare_queue(harness.queue)
    subscription = await broker.consume_replies(Replies())
    await broker.publish(harness.queue, b"ok", message_id="a", reply_to=DIRECT_REPLY_TO)
    await subscription.cancel()
    with pytest.raises(BrokerUnavailable, match="reply consumer"):
        await broker.publish(harness.queue, b"no", message_id="b", reply_to=DIRECT_REPLY_TO)


async def test_a_reply_to_a_gone_consumer_is_dropped_silently(harness: Any) -> None:
    """Given the requester's connection closed, a reply to its address raises nothing and
    reaches nobody; the replier's channel still works."""
    api, core = await harness.client(), await harness.client()
    await api.declare_queue(harness.queue)
    await api.consume_replies(Replies())
    await api.publish(harness.queue, b"req", message_id="r1", reply_to=DIRECT_REPLY_TO)
    request = await get_eventually(core, harness.queue)
    await request.ack()
    await api.close()
    newcomer = await harness.client()
    theirs = Replies()
    await newcomer.consume_replies(theirs)
    assert request.reply_to is not None
    await core.send_reply(request.reply_to, b"r1", correlation_id="r1")
    assert await theirs.nothing_within(0.3)
    await core.publish(harness.queue, b"after", message_id="a")
    after = await get_eventually(core, harness.queue)
    assert after.body == b"after"
    await after.ack()


async def test_the_reply_consumer_comes_back_at_a_new_address_after_a_lost_connection(
        harness: Any) -> None:
    """Given the requester's connection was lost, its next publish with reply_to works, at
    a new address that gets the replies; the old address gets none."""
    api, core = await harness.client(), await harness.client()
    await api.declare_queue(harness.queue)
    replies = Replies()
    await api.consume_replies(replies)
    await api.publish(harness.queue, b"before", message_id="b", reply_to=DIRECT_REPLY_TO)
    before = await get_eventually(core, harness.queue)
    await before.ack()
    await harness.lose_connection(api)
    await api.publish(harness.queue, b"after", message_id="a", reply_to=DIRECT_REPLY_TO)
    after = await get_eventually(core, harness.queue)
    await after.ack()
    assert after.reply_to not in (None, before.reply_to)
    await core.send_reply(before.reply_to, b"old", correlation_id="b")
    await core.send_reply(after.reply_to, b"new", correlation_id="a")
    assert await replies.next() == b"new"
    assert await replies.nothing_within(0.3)
