"""REFERENCE_COMPLETION=reply on real RabbitMQ and Redis: the whole pipeline in one process,
answered through Direct Reply-To, and a lost reply channel that costs latency, not results.

Each test has a queue and a key prefix of its own (the `real` fixture), removed afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from reference.fakes.pipeline import running_pipeline
from reference.settings import Settings
from tests.helpers import eventually
from tests.system.conftest import RealBrokers

pytestmark = pytest.mark.real

SECRET = "reply-secret-" + "r" * 24


def reply_settings(real: RealBrokers, **changes: Any) -> Settings:
    return Settings(
        broker_url=real.amqp_url, store_url=real.redis_url, queue=real.queue,
        key_prefix=real.key_prefix, jwt_secret=SECRET, completion="reply",
        request_timeout_s=8.0, claim_ttl_s=2.0, shutdown_timeout_s=1.0,
    ).replace(**changes)


async def test_the_pipeline_answers_through_direct_reply_to(real: RealBrokers) -> None:
    """With the safety sweep a minute away, every request is answered, so by reply: a user's
    create, read and delete, a job with progress, a failing job, 20 jobs at once."""
    async with running_pipeline(reply_settings(real, safety_poll_ms=60_000.0)) as p:
        h = p.auth()
        created = await p.client.post("/users", json={"name": "Ada", "email": "ada@x.example"},
                                      headers=h)
        assert created.status_code == 201, created.text
        user = created.json()
        got = await p.client.get(f"/users/{user['id']}", headers=h)
        assert (got.status_code, got.json()) == (200, user)
        assert (await p.client.delete(f"/users/{user['id']}", headers=h)).status_code == 204
        job = await p.client.post("/jobs", json={"duration_ms": 100, "steps": 2}, headers=h)
        assert (job.status_code, job.json()) == (200, {"duration_ms": 100, "steps": 2})
        assert "notice;dur=" in job.headers["server-timing"]
        failed = await p.client.post("/jobs", json={"duration_ms": 0, "fail": True}, headers=h)
        assert failed.status_code == 422
        many = await asyncio.gather(*(p.client.post("/jobs", json={"duration_ms": 0},
                                                    headers=h) for _ in range(20)))
        assert [r.status_code for r in many] == [200] * 20
        assert p.app.ctx.completion.replies == 25


@pytest.mark.parametrize("lost", ["channel", "connection"])
async def test_a_lost_reply_channel_costs_latency_not_the_result(real: RealBrokers,
                                                                 lost: str) -> None:
    """Given the API's reply channel (or its whole connection) closed after a request was
    published, the worker's reply goes nowhere and the safety sweep answers anyway; the next
    request is answered by reply, on the consumer restored before its publish."""
    async with running_pipeline(reply_settings(real, safety_poll_ms=300.0)) as p:
        broker: Any = p.services.broker  # the API's RabbitMQBroker
        completion = p.app.ctx.completion
        published = asyncio.Event()
        publish = broker.publish

        async def publish_and_tell(*args: Any, **kwargs: Any) -> None:
            await publish(*args, **kwargs)
            published.set()

        broker.publish = publish_and_tell
        call = asyncio.ensure_future(p.client.post(
            "/jobs", json={"duration_ms": 800, "steps": 1}, headers=p.auth()))
        await asyncio.wait_for(published.wait(), 5)
        if lost == "channel":
            await broker._publisher.close()
        else:
            await broker._conn.close()
        first = await call
        assert first.status_code == 200, first.text
        assert completion.replies == 0

        second = await p.client.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
        assert second.status_code == 200, second.text

        async def replied() -> bool:  # it may come a moment after a sweep answered
            return bool(completion.replies == 1)

        assert await eventually(replied, timeout=2.0)
