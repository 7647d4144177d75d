"""Multi-host AMQP URLs on a real RabbitMQ: a dead host first in the list, and a node that
goes away under a running API and worker (a TcpProxy in front of the one real node)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from reference.adapters.rabbitmq import RabbitMQBroker
from reference.fakes.pipeline import running_pipeline
from reference.settings import Settings
from tests.contract.harness import Inbox
from tests.helpers import eventually
from tests.system.conftest import RealBrokers

pytestmark = pytest.mark.real

SECRET = "hosts-secret-" + "h" * 24
DEAD = "127.0.0.1:1"  # nothing listens on port 1


def with_hosts(url: str, *hosts: str) -> str:
    """`url` with its host replaced by `hosts`, comma-separated."""
    auth, _, rest = url.partition("//")[2].rpartition("@")
    path = rest.partition("/")[2]
    return f"amqp://{auth}@{','.join(hosts)}/{path}"


async def test_a_dead_first_host_is_passed_over(real: RealBrokers) -> None:
    """With a dead host first in the URL, the adapter connects to the next one and works."""
    live = real.amqp_url.partition("@")[2].partition("/")[0]
    broker = RabbitMQBroker(with_hosts(real.amqp_url, DEAD, live))
    try:
        await broker.connect()
        await broker.declare_queue(real.queue)
        await broker.publish(real.queue, b"hello", message_id="h1")
        inbox = Inbox()
        await broker.consume(real.queue, inbox, prefetch=1)
        delivery = await inbox.next()
        assert delivery.body == b"hello"
        await delivery.ack()
    finally:
        await broker.close()


async def test_api_and_worker_move_to_the_next_node_by_themselves(real: RealBrokers) -> None:
    """Given an API and a worker connected to the first node (a proxy) of a two-node URL,
    when that node goes away, both reconnect to the second node with no request or restart
    needed, and requests are answered again."""
    live = real.amqp_url.partition("@")[2].partition("/")[0]
    url = with_hosts(real.amqp_url, f"127.0.0.1:{real.amqp_proxy.port}", live)
    settings = Settings(broker_url=url, store_url=real.redis_url, queue=real.queue,
                        key_prefix=real.key_prefix, jwt_secret=SECRET, completion="reply",
                        request_timeout_s=8.0, claim_ttl_s=2.0, shutdown_timeout_s=1.0)
    async with running_pipeline(settings) as p:
        async with httpx.AsyncClient(base_url=p.base_url, timeout=10) as http:
            ok = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
            assert ok.status_code == 200
            assert real.amqp_proxy.connections == 2  # the API's and the worker's
            adapters = [p.services.broker, *(s.broker for s in p.worker_services)]
            before = [a._conn for a in adapters]
            real.amqp_proxy.cut()  # the first node goes away for good

            async def moved() -> bool:
                return all(a._conn is not old and a._is_open()
                           for a, old in zip(adapters, before, strict=True))

            await eventually(moved, timeout=10, interval=0.05)
            answered = await asyncio.gather(*(http.post("/jobs", json={"duration_ms": 0},
                                                        headers=p.auth()) for _ in range(5)))
            assert [r.status_code for r in answered] == [200] * 5
            assert real.amqp_proxy.connections == 2  # nothing went back to the dead node
