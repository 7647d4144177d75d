"""contract §8 "Outages" in one process on real brokers, with connections cut by a TCP proxy."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from reference.fakes.pipeline import running_pipeline
from reference.settings import Settings
from tests.helpers import eventually
from tests.system.conftest import RealBrokers

pytestmark = pytest.mark.real

SECRET = "outage-secret-" + "o" * 24


def settings_for(real: RealBrokers, **changes: object) -> Settings:
    return Settings(
        broker_url=real.amqp_via_proxy, store_url=real.redis_via_proxy, queue=real.queue,
        key_prefix=real.key_prefix, jwt_secret=SECRET, request_timeout_s=8.0, claim_ttl_s=2.0,
        connect_timeout_s=5.0, shutdown_timeout_s=2.0,
    ).replace(**changes)


async def test_broker_outage_503_then_recovers_by_itself(real: RealBrokers) -> None:
    """Broker cut: publishing requests get 503 at once, /readyz 503, reads still work;
    restored: requests succeed again with no restart."""
    async with running_pipeline(settings_for(real)) as p:
        async with httpx.AsyncClient(base_url=p.base_url, timeout=10) as http:
            ok = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
            assert ok.status_code == 200
            real.amqp_proxy.cut()
            started = time.monotonic()
            r = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
            assert r.status_code == 503
            assert time.monotonic() - started < 3.0
            assert (await http.get("/readyz")).status_code == 503
            read = await http.get(f"/requests/{ok.headers['x-request-id']}", headers=p.auth())
            assert read.status_code == 200
            real.amqp_proxy.restore()

            async def recovered() -> bool:
                again = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
                return again.status_code == 200

            assert await eventually(recovered, timeout=20, interval=0.2)
            assert (await http.get("/readyz")).status_code == 200


async def test_worker_losing_the_broker_mid_work_finishes_it_once(real: RealBrokers) -> None:
    """A worker whose broker connection drops mid-job still finishes and writes the result;
    the redelivered copy is acknowledged without running again."""
    async with running_pipeline(settings_for(real)) as p:
        worker = p.workers[0]
        async with httpx.AsyncClient(base_url=p.base_url, timeout=15) as http:
            call = asyncio.ensure_future(http.post(
                "/jobs", json={"duration_ms": 1200, "steps": 6}, headers=p.auth()))
            await eventually(lambda: _true(worker.runs_started == 1))

            async def api_waits() -> bool:
                # The worker can start before the API has read its publisher confirm (a race
                # seen under load): cut only once the API waits, i.e. has its confirm.
                metrics = (await http.get("/metrics")).text
                return "reference_inflight_waits 1.0" in metrics

            await eventually(api_waits)
            real.amqp_proxy.cut()
            await asyncio.sleep(0.5)
            real.amqp_proxy.restore()
            r = await asyncio.wait_for(call, 15)
        assert r.status_code == 200
        # The copy that comes back after the reconnect is acked, not run.
        assert await eventually(lambda: _queue_empty(p), timeout=20, interval=0.2)
        assert worker.runs_started == 1
        assert worker.processed == 1


async def test_redis_outage_503_for_new_requests_waiting_ones_finish(real: RealBrokers) -> None:
    """Redis cut: new requests get 503; a request already waiting gets its result once
    Redis is back (not a 503 that would invite a duplicate)."""
    async with running_pipeline(settings_for(real)) as p:
        async with httpx.AsyncClient(base_url=p.base_url, timeout=15) as http:
            waiting = asyncio.ensure_future(http.post(
                "/jobs", json={"duration_ms": 600, "steps": 3}, headers=p.auth()))
            await eventually(lambda: _true(p.workers[0].runs_started >= 1))
            real.redis_proxy.cut()
            r = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
            assert r.status_code == 503
            assert (await http.get("/readyz")).status_code == 503
            await asyncio.sleep(0.5)
            real.redis_proxy.restore()
            done = await asyncio.wait_for(waiting, 15)
            assert done.status_code == 200, done.text
            after = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
            assert after.status_code == 200


async def _queue_empty(p: object) -> bool:
    from reference.fakes.pipeline import Pipeline

    assert isinstance(p, Pipeline)
    return await p.services.broker.message_count(p.settings.queue) == 0


async def _true(value: bool) -> bool:
    return value


async def test_push_subscription_survives_a_redis_cut(real: RealBrokers) -> None:
    """With push, a Redis cut drops the subscription; it comes back by itself, and notices
    work again (the safety poll is set too slow to be what answers)."""
    settings = settings_for(real, completion="push", safety_poll_ms=60_000.0)
    async with running_pipeline(settings) as p:
        async with httpx.AsyncClient(base_url=p.base_url, timeout=15) as http:
            before = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
            assert before.status_code == 200
            real.redis_proxy.cut()
            await asyncio.sleep(0.5)
            real.redis_proxy.restore()

            async def answered_quickly() -> bool:
                started = time.monotonic()
                r = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
                return r.status_code == 200 and time.monotonic() - started < 2.0

            assert await eventually(answered_quickly, timeout=30, interval=0.3)


async def test_consumer_survives_a_channel_closed_by_the_broker(real: RealBrokers) -> None:
    """The broker closes the worker's consumer channel (a channel error, the connection
    lives on): the worker consumes again on a new channel, and requests still succeed."""
    async with running_pipeline(settings_for(real)) as p:
        async with httpx.AsyncClient(base_url=p.base_url, timeout=15) as http:
            assert (await http.post("/jobs", json={"duration_ms": 0},
                                    headers=p.auth())).status_code == 200
            worker_broker = p.worker_services[0].broker
            consumer = worker_broker._consumers[0]  # type: ignore[attr-defined]
            old_channel = consumer.channel
            # Acking a delivery tag that was never given out makes RabbitMQ close the channel
            # with PRECONDITION_FAILED, as a buggy client would.
            await old_channel.basic_ack(987654)
            await eventually(lambda: _true(old_channel.is_closed), timeout=5)
            await eventually(lambda: _true(consumer.channel is not old_channel), timeout=5)
            r = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
            assert r.status_code == 200
