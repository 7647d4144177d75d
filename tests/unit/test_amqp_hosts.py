"""Multi-host AMQP URLs: the candidates made of one URL, and the order the adapter tries them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reference.adapters import rabbitmq
from reference.adapters.rabbitmq import RabbitMQBroker, candidate_urls
from reference.errors import BrokerUnavailable
from tests.helpers import eventually


@pytest.mark.parametrize(("url", "candidates"), [
    ("amqp://guest:guest@127.0.0.1:5672/", ["amqp://guest:guest@127.0.0.1:5672/"]),
    ("amqp://user:pw@h1:5701,h2:5702,h3:5703/vhost",
     ["amqp://user:pw@h1:5701/vhost", "amqp://user:pw@h2:5702/vhost",
      "amqp://user:pw@h3:5703/vhost"]),
    ("amqps://u:p%40ss@a.example,b.example:5671/%2F?heartbeat=10",
     ["amqps://u:p%40ss@a.example/%2F?heartbeat=10",
      "amqps://u:p%40ss@b.example:5671/%2F?heartbeat=10"]),
    ("amqp://[::1]:5672,127.0.0.1/", ["amqp://[::1]:5672/", "amqp://127.0.0.1/"]),
    ("amqp://h1", ["amqp://h1"]),
])
def test_a_url_gives_one_single_host_url_per_host(url: str, candidates: list[str]) -> None:
    """Each host of the URL becomes a URL of its own, in order, with the same user,
    password, vhost and query."""
    assert candidate_urls(url) == candidates


@pytest.mark.parametrize("url", ["amqp://u:p@h1:5701,:5702/", "amqp://h1:5701,h2:port/",
                                 "amqp://h1:0/"])
def test_a_bad_host_entry_is_a_value_error(url: str) -> None:
    """An empty host or a port that is not 1-65535 is refused, as the composition root does."""
    with pytest.raises(ValueError):
        candidate_urls(url)


class FakeConnection:
    """What the adapter uses of an aiormq connection, for a connect that succeeded."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.is_closed = False
        self.closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def lose(self) -> None:
        self.is_closed = True
        self.closing.set_result(None)

    async def close(self) -> None:
        if not self.is_closed:
            self.lose()


class Hosts:
    """aiormq.connect stood in for: records each host tried; `up` says which answer."""

    def __init__(self, up: set[str]) -> None:
        self.up = up
        self.tried: list[str] = []
        self.connections: list[FakeConnection] = []

    async def connect(self, url: str, **_: Any) -> FakeConnection:
        host = url.split("@")[1].split("/")[0]
        self.tried.append(host)
        if host not in self.up:
            raise ConnectionRefusedError(111, "Connection refused")
        self.connections.append(FakeConnection(host))
        return self.connections[-1]


async def test_hosts_are_tried_in_turn_from_the_one_after_the_last_lost_or_failed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Given h1 down, a connect goes on to h2; when h2's connection is lost, the reconnect
    starts at h3; with every host down, the error names each of them."""
    hosts = Hosts(up={"h2:5702", "h3:5703"})
    monkeypatch.setattr(rabbitmq.aiormq, "connect", hosts.connect)
    broker = RabbitMQBroker("amqp://u:p@h1:5701,h2:5702,h3:5703/")
    try:
        await broker.connect()
        assert hosts.tried == ["h1:5701", "h2:5702"]

        hosts.connections[-1].lose()  # the node went away: the supervisor reconnects

        async def reconnected() -> bool:
            return broker._is_open()

        await eventually(reconnected)
        assert hosts.tried == ["h1:5701", "h2:5702", "h3:5703"]

        hosts.up.clear()
        hosts.connections[-1].lose()
        with pytest.raises(BrokerUnavailable) as caught:
            await broker._connection(force=True)
        for host in ("h1:5701", "h2:5702", "h3:5703"):
            assert host in str(caught.value)
    finally:
        await broker.close()


def test_a_multi_host_url_is_printed_without_its_password() -> None:
    """The start-up line shows every host of a multi-host URL and hides the password."""
    from reference.cli import _redact

    shown = _redact("amqp://user:s3cret@h1:5701,h2:5702,h3:5703/vhost")
    assert shown == "amqp://user:***@h1:5701,h2:5702,h3:5703/vhost"
    assert _redact("amqp://h1:5701,h2:5702/") == "amqp://h1:5701,h2:5702/"
