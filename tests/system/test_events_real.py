"""GET /requests/{id}/events on real RabbitMQ and Redis: in-process APIs, and `reference serve`
as a process.

Each test has a queue and a key prefix of its own (the `real` fixture), removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from reference.adapters.redis_results import RedisResultStore
from reference.api import events
from reference.fakes.pipeline import Pipeline, running_pipeline
from reference.records import QUEUED, RUNNING, SUCCESS, ResultRecord
from reference.settings import Settings
from tests.api.test_events import Sse, start_job, stream
from tests.system.conftest import RealBrokers
from tests.system.stack import Stack, stack_env
from tests.system.test_processes import auth

pytestmark = pytest.mark.real


def real_settings(real: RealBrokers, *, via_proxy: bool = False, **changes: Any) -> Settings:
    return Settings(
        jwt_secret=secrets.token_hex(32),
        broker_url=real.amqp_url,
        store_url=real.redis_via_proxy if via_proxy else real.redis_url,
        queue=real.queue, key_prefix=real.key_prefix, request_timeout_s=5.0, claim_ttl_s=2.0,
        shutdown_timeout_s=1.0).replace(**changes)


@contextlib.asynccontextmanager
async def pipeline(settings: Settings, *, workers: int = 0) -> AsyncIterator[Pipeline]:
    async with running_pipeline(settings, workers=workers) as pipe:
        yield pipe


@pytest.mark.parametrize("mode", ["poll", "batch", "push", "reply"])
async def test_stream_follows_a_job_on_real_brokers(real: RealBrokers, mode: str) -> None:
    """On RabbitMQ and Redis, in every completion mode, the stream shows Queued, Running with
    each progress, then Success, and ends."""
    async with pipeline(real_settings(real, completion=mode)) as pipe:
        rid = await start_job(pipe, duration_ms=300, steps=3)
        async with stream(pipe, rid) as sse:
            first = await sse.next()
            assert first is not None and first.event == QUEUED
            await pipe.add_worker()
            rest = await sse.rest(timeout=15)
        got = [first, *rest]
        # The last progress write (100) and the final record come back to back: one read may
        # see both, so the stream may skip that Running record.
        running = [e.data["progress"] for e in got[1:-1]]
        assert running in ([0, 33, 66], [0, 33, 66, 100])
        assert [e.event for e in got] == [QUEUED] + [RUNNING] * len(running) + [SUCCESS]
        assert [e.n for e in got] == list(range(1, len(got) + 1))


async def test_scripts_announce_on_the_contract_channels(real: RealBrokers) -> None:
    """On a real Redis, BEGIN and PROGRESS publish the request id on <prefix>reference:updates
    and FINISH on <prefix>reference:finals, in the order written."""
    client = aioredis.from_url(real.redis_url)
    listener = client.pubsub()
    updates, finals = f"{real.key_prefix}reference:updates", f"{real.key_prefix}reference:finals"
    try:
        await listener.subscribe(updates, finals)
        for _ in range(2):
            assert (await listener.get_message(timeout=5))["type"] == "subscribe"
        store = RedisResultStore(client, key_prefix=real.key_prefix)
        running = ResultRecord(status=RUNNING, detail="running", progress=0)
        assert await store.begin("r1", "w", running, claim_ttl_s=5,
                                 running_ttl_s=60) == "started"
        assert await store.put("r1", running.evolve(progress=40), ttl_s=60)
        assert await store.finish("r1", "w", ResultRecord(status=SUCCESS, detail="d"),
                                  ttl_s=60)
        heard = []
        while len(heard) < 3:
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message is not None
            heard.append((message["channel"].decode(), message["data"].decode()))
        assert heard == [(updates, "r1"), (updates, "r1"), (finals, "r1")]
    finally:
        await listener.aclose()
        await client.aclose()


async def test_resume_on_another_api_process(real: RealBrokers) -> None:
    """An event id from one API process resumes on another: nothing the client has is sent
    again, and the ids go on."""
    settings = real_settings(real)
    async with pipeline(settings) as one, pipeline(settings) as two:
        rid = await start_job(one, duration_ms=100, steps=2)
        async with stream(one, rid) as sse:
            queued = await sse.next()
        assert queued is not None and queued.event == QUEUED
        headers = {**two.auth("ada"), "Last-Event-ID": queued.id}
        async with two.client.stream("GET", f"/requests/{rid}/events",
                                     headers=headers) as resp:
            assert resp.status_code == 200
            sse = Sse(resp)
            try:
                with pytest.raises(TimeoutError):
                    await sse.next(timeout=0.5)
                await one.add_worker()
                got = await sse.rest(timeout=15)
            finally:
                await sse.close()
        assert [e.n for e in got] == list(range(2, 2 + len(got)))
        assert got[0].event == RUNNING and got[-1].event == SUCCESS
        final = await two.client.get(f"/requests/{rid}/events",
                                     headers={**one.auth("ada"), "Last-Event-ID": got[-1].id})
        assert final.status_code == 204


async def test_a_cut_redis_connection_is_survived(real: RealBrokers,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """When the API's Redis connections are cut, its subscription comes back once Redis is
    reachable again and the open stream re-reads: a change made meanwhile arrives without
    waiting for the safety re-read."""
    monkeypatch.setattr(events, "SAFETY_REREAD_S", 60.0)
    async with pipeline(real_settings(real, via_proxy=True)) as pipe:
        rid = await start_job(pipe)
        direct = aioredis.from_url(real.redis_url)
        try:
            async with stream(pipe, rid) as sse:
                assert (await sse.next()) is not None
                real.redis_proxy.cut()
                running = ResultRecord(status=RUNNING, detail="meanwhile", owner="ada")
                await direct.set(real.key_prefix + rid, running.to_json(), px=60_000)
                await asyncio.sleep(1.0)
                real.redis_proxy.restore()
                event = await sse.next(timeout=20)
            assert event is not None and event.data["detail"] == "meanwhile"
        finally:
            await direct.aclose()


def _lines_until_blank(lines: Any) -> list[str]:
    got = []
    for line in lines:
        if line == "":
            return got
        got.append(line)
    return got


def test_sigterm_ends_open_streams_at_once(real: RealBrokers, tmp_path: Path) -> None:
    """`reference serve` that gets SIGTERM ends its open streams and exits within seconds,
    rather than waiting out Sanic's 15 s graceful shutdown for them."""
    stack = Stack(tmp_path, stack_env(real.amqp_url, real.redis_url, real.queue,
                                      real.key_prefix))
    api = None
    signalled = False
    try:
        api = stack.serve()
        # Sanic's manager waits for its workers' acknowledgement a moment after they are
        # ready; a SIGTERM before that leaves it waiting 30 s, then it SIGKILLs its process
        # group (which is pytest's). Give it that moment.
        time.sleep(1.0)
        with httpx.Client(base_url=stack.base_url, timeout=30) as http:
            r = http.post("/jobs", json={"duration_ms": 0},
                          headers={**auth(), "Prefer": "respond-async"})
            assert r.status_code == 202, r.text
            rid = r.json()["request_id"]
            with http.stream("GET", f"/requests/{rid}/events", headers=auth()) as resp:
                assert resp.status_code == 200
                lines = resp.iter_lines()
                first = _lines_until_blank(lines)
                assert "event: Queued" in first
                data = json.loads(next(x for x in first if x.startswith("data:"))[5:])
                assert data["request_id"] == rid
                sent = time.monotonic()
                api.popen.send_signal(signal.SIGTERM)
                signalled = True
                rest = list(lines)  # until the server ends the stream
                ended = time.monotonic() - sent
        assert not any(line.startswith("event:") for line in rest)
        assert ended < 8, ended
        api.popen.wait(timeout=10)
        assert time.monotonic() - sent < 10
    finally:
        if signalled and api is not None and api.popen.poll() is None:
            # Never a second SIGTERM: Sanic answers it by killing its process group.
            api.popen.kill()
            api.popen.wait(timeout=5)
        stack.stop()
