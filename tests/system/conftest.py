"""Real RabbitMQ and Redis behind fault-injection proxies, with names of their own per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from tests.conftest import AMQP_URL, REDIS_URL, delete_queue_and_keys, require_server
from tests.faults import TcpProxy

pytestmark = pytest.mark.real


@dataclass
class RealBrokers:
    amqp_url: str
    redis_url: str
    queue: str
    key_prefix: str
    amqp_proxy: TcpProxy
    redis_proxy: TcpProxy

    @property
    def amqp_via_proxy(self) -> str:
        return self.amqp_proxy.url_through(self.amqp_url)

    @property
    def redis_via_proxy(self) -> str:
        return self.redis_proxy.url_through(self.redis_url)


@pytest.fixture
def proxies() -> Iterator[tuple[TcpProxy, TcpProxy]]:
    require_server(AMQP_URL, 5672)
    require_server(REDIS_URL, 6379)
    amqp = TcpProxy.for_url(AMQP_URL, 5672).start()
    redis = TcpProxy.for_url(REDIS_URL, 6379).start()
    yield amqp, redis
    amqp.stop()
    redis.stop()


@pytest_asyncio.fixture
async def real(proxies: tuple[TcpProxy, TcpProxy], unique: str) -> AsyncIterator[RealBrokers]:
    brokers = RealBrokers(AMQP_URL, REDIS_URL, f"sys-{unique}", f"sys{unique}:", *proxies)
    yield brokers
    await delete_queue_and_keys(brokers.queue, brokers.key_prefix)
