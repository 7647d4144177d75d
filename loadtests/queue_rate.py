"""The raw rate of one RabbitMQ queue: publish with confirms and consume with acks, nothing else.

    python -m loadtests.queue_rate --queue-type quorum --seconds 10

Where one queue saturates, for the capacity model in the README: the ceiling of the design's
single `request_message` queue, measured without the service around it. Publishers keep
`--in-flight` unconfirmed messages each; the consumer acks with prefetch `--prefetch`. It uses
a queue of its own (deleted afterwards) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Sequence

import aiormq

BODY = json.dumps({"action": "runJob", "params": {"duration_ms": 0, "steps": 1},
                   "request_id": str(uuid.uuid4())}).encode()


async def measure(url: str, queue_type: str, seconds: float, publishers: int,
                  in_flight: int, prefetch: int) -> dict[str, float | int | str]:
    queue = f"queue_rate_{uuid.uuid4().hex[:10]}"
    conn = await aiormq.connect(url)
    setup = await conn.channel()
    await setup.queue_declare(queue, durable=True, arguments={"x-queue-type": queue_type})
    consumed = 0
    published = 0
    stop_at = time.monotonic() + seconds

    consumer_channel = await conn.channel()
    await consumer_channel.basic_qos(prefetch_count=prefetch)

    caught_up = asyncio.Event()  # set when the consumer has every message published so far
    publishing = True

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        nonlocal consumed
        consumed += 1
        assert message.delivery_tag is not None
        await message.channel.basic_ack(message.delivery_tag)
        if not publishing and consumed >= published:
            caught_up.set()

    consuming = await consumer_channel.basic_consume(queue, on_message)

    async def publish() -> None:
        nonlocal published
        channel = await conn.channel(publisher_confirms=True)
        props = aiormq.spec.Basic.Properties(delivery_mode=2, content_type="application/json")
        pending: set[asyncio.Future[object]] = set()
        while time.monotonic() < stop_at:
            while len(pending) < in_flight:
                pending.add(asyncio.ensure_future(
                    channel.basic_publish(BODY, routing_key=queue, properties=props)))
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            published += len(done)
        if pending:
            done, _ = await asyncio.wait(pending, timeout=5)
            published += len(done)

    started = time.monotonic()
    try:
        async with asyncio.timeout(seconds + 30):
            await asyncio.gather(*(publish() for _ in range(publishers)))
            elapsed = time.monotonic() - started
            publishing = False
            if consumed < published:  # the consumer drains what is left
                await caught_up.wait()
        drained = time.monotonic() - started
    finally:
        if consuming.consumer_tag is not None:
            await consumer_channel.basic_cancel(consuming.consumer_tag)
        await setup.queue_delete(queue)
        await conn.close()
    return {"queue_type": queue_type, "seconds": round(elapsed, 2), "published": published,
            "consumed": consumed, "publish_rate": round(published / elapsed, 1),
            "consume_rate": round(consumed / drained, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.queue_rate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--queue-type", choices=("classic", "quorum"), default="classic")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=128)
    parser.add_argument("--prefetch", type=int, default=256)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.url, args.queue_type, args.seconds, args.publishers,
                                 args.in_flight, args.prefetch))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
