"""GET /requests/{id}/events: a request's records as Server-Sent Events, in one process.

Each test runs its own pipeline (API server, fakes, workers started when the test wants them),
so that a request can be seen `Queued` before any worker takes it, and so that the bounds of
`reference.api.events` can be made small for one test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import httpx
import pytest

from reference.actions import Action, ActionContext, Outcome, Params, Route
from reference.adapters.lua_scripts import lua
from reference.adapters.redis_results import RedisResultStore
from reference.api import events
from reference.fakes.pipeline import Pipeline, running_pipeline
from reference.fakes.redis_server import client_faults
from reference.records import FAIL, QUEUED, RUNNING, SUCCESS, ResultRecord
from tests.api.conftest import api_settings
from tests.helpers import eventually

MODES = ["poll", "batch", "push", "reply"]


# --- a small SSE client -----------------------------------------------------------------------


@dataclass
class Event:
    id: str
    event: str
    data: dict[str, Any]

    @property
    def n(self) -> int:
        return int(self.id.split("-")[0])


class Sse:
    """Reads a text/event-stream response in the background: events, comments, the end."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.comments: list[str] = []
        self.events: list[Event] = []
        self.ended = asyncio.Event()
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if fields:
                        event = Event(fields["id"], fields["event"], json.loads(fields["data"]))
                        self.events.append(event)
                        await self._queue.put(event)
                    fields = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        finally:
            self.ended.set()
            await self._queue.put(None)

    async def next(self, timeout: float = 5.0) -> Event | None:
        """The next event; None once the stream has ended; TimeoutError if none came."""
        async with asyncio.timeout(timeout):
            return await self._queue.get()

    async def rest(self, timeout: float = 5.0) -> list[Event]:
        """Every event until the stream ends."""
        got: list[Event] = []
        async with asyncio.timeout(timeout):
            while (event := await self._queue.get()) is not None:
                got.append(event)
        return got

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


@contextlib.asynccontextmanager
async def stream(pipe: Pipeline, rid: str, *, sub: str = "ada",
                 last_event_id: str | None = None) -> AsyncIterator[Sse]:
    headers = pipe.auth(sub)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with pipe.client.stream("GET", f"/requests/{rid}/events", headers=headers) as resp:
        sse = Sse(resp)
        try:
            yield sse
        finally:
            await sse.close()


@contextlib.asynccontextmanager
async def pipeline(*, workers: int = 0, actions: tuple[Action, ...] = (),
                   **changes: Any) -> AsyncIterator[Pipeline]:
    async with running_pipeline(api_settings(**changes), workers=workers,
                                actions=actions) as pipe:
        yield pipe


async def start_job(pipe: Pipeline, sub: str = "ada", **params: Any) -> str:
    r = await pipe.client.post("/jobs", json={"duration_ms": 0, **params},
                               headers={**pipe.auth(sub), "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    return str(r.json()["request_id"])


async def get_events(pipe: Pipeline, rid: str, *, sub: str = "ada",
                     last_event_id: str | None = None) -> httpx.Response:
    headers = pipe.auth(sub)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return await pipe.client.get(f"/requests/{rid}/events", headers=headers)


# --- the stream -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_stream_follows_a_job_from_queued_to_its_final_record(mode: str) -> None:
    """In every completion mode the owner sees Queued, Running with each progress, then
    Success, with ids counting up, each body as GET /requests/{id} shows it, and the end."""
    async with pipeline(completion=mode) as pipe:
        rid = await start_job(pipe, duration_ms=200, steps=4)
        async with stream(pipe, rid) as sse:
            assert sse.response.status_code == 200
            assert sse.response.headers["content-type"].startswith("text/event-stream")
            assert sse.response.headers["cache-control"] == "no-cache"
            assert sse.response.headers["x-request-id"] == rid
            first = await sse.next()
            assert first is not None and first.event == QUEUED
            await pipe.add_worker()
            rest = await sse.rest()
        got = [first, *rest]
        # The last progress write (100) and the final record come back to back: one read may
        # see both, so the stream may skip that Running record.
        running = [e.data["progress"] for e in got[1:-1]]
        assert running in ([0, 25, 50, 75], [0, 25, 50, 75, 100])
        assert [e.event for e in got] == [QUEUED] + [RUNNING] * len(running) + [SUCCESS]
        assert [e.n for e in got] == list(range(1, len(got) + 1))
        assert all(e.data["request_id"] == rid and "owner" not in e.data for e in got)
        read = await pipe.client.get(f"/requests/{rid}", headers=pipe.auth("ada"))
        assert got[-1].data == read.json()
        assert got[-1].data["result"] == {"duration_ms": 200, "steps": 4}


async def test_a_failed_job_ends_with_a_fail_event() -> None:
    """A job that fails ends its stream with a Fail event that carries the error."""
    async with pipeline(workers=1) as pipe:
        rid = await start_job(pipe, duration_ms=20, steps=2, fail=True)
        async with stream(pipe, rid) as sse:
            got = await sse.rest()
        assert got[-1].event == FAIL
        assert got[-1].data["error"]["code"] == "job_failed"
        assert all(e.event != FAIL for e in got[:-1])


async def test_every_stream_on_a_request_gets_every_change() -> None:
    """Several streams on one request (one subscription in the process) see the same events."""
    async with pipeline() as pipe:
        rid = await start_job(pipe, duration_ms=150, steps=3)
        async with contextlib.AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(stream(pipe, rid)) for _ in range(5)]
            for sse in streams:
                assert (await sse.next()) is not None
            await pipe.add_worker()
            results = await asyncio.gather(*(sse.rest() for sse in streams))
        ids = [[e.id for e in got] for got in results]
        assert all(i == ids[0] for i in ids)
        assert [e.event for e in results[0]][-1] == SUCCESS


async def test_a_flood_of_progress_is_coalesced() -> None:
    """Hundreds of progress writes in a burst cost a few reads: past a burst of READ_BURST the
    stream reads at most READ_RATE_PER_S times a second, and the final event still comes."""

    class Flood(Params):
        writes: int

    async def flood(ctx: ActionContext, p: Flood) -> Outcome:
        for i in range(p.writes):
            await ctx.report_progress(i * 100 // p.writes, f"write {i}")
        return Outcome("flooded", {"writes": p.writes})

    action = Action("flood", Flood, flood, route=Route("POST", "/flood"))
    async with pipeline(actions=(action,)) as pipe:
        r = await pipe.client.post("/flood", json={"writes": 400},
                                   headers={**pipe.auth("ada"), "Prefer": "respond-async"})
        rid = r.json()["request_id"]
        async with stream(pipe, rid) as sse:
            assert (await sse.next()) is not None
            started = time.monotonic()
            await pipe.add_worker()
            got = await sse.rest(timeout=20)
            elapsed = time.monotonic() - started
    assert got[-1].event == SUCCESS and got[-1].data["result"] == {"writes": 400}
    bound = events.READ_BURST + events.READ_RATE_PER_S * elapsed + 2
    assert len(got) <= bound, (len(got), elapsed)
    assert len(got) < 100


# --- resuming ---------------------------------------------------------------------------------


async def test_resume_sends_nothing_the_client_has() -> None:
    """With the Last-Event-ID of the current record, the stream opens without an event and
    sends the next change as the next id."""
    async with pipeline() as pipe:
        rid = await start_job(pipe, duration_ms=0)
        async with stream(pipe, rid) as sse:
            queued = await sse.next()
        assert queued is not None and queued.event == QUEUED
        async with stream(pipe, rid, last_event_id=queued.id) as sse:
            assert sse.response.status_code == 200
            with pytest.raises(TimeoutError):
                await sse.next(timeout=0.3)
            await pipe.add_worker()
            got = await sse.rest()
        assert got[0].n == queued.n + 1 and got[0].event == RUNNING
        assert got[-1].event == SUCCESS
        assert [e.n for e in got] == list(range(2, 2 + len(got)))


async def test_resume_after_the_end() -> None:
    """Once final: the final event's id gets 204 (EventSource stops), an older id gets the
    final record as the next id, and an id not of the form starts afresh at 1."""
    async with pipeline(workers=1) as pipe:
        rid = await start_job(pipe, duration_ms=20, steps=2)
        async with stream(pipe, rid) as sse:
            got = await sse.rest()
        final = got[-1]
        assert final.event == SUCCESS
        done = await get_events(pipe, rid, last_event_id=final.id)
        assert (done.status_code, done.content) == (204, b"")
        older = f"{final.n - 1}-{'0' * 16}"
        async with stream(pipe, rid, last_event_id=older) as sse:
            again = await sse.rest()
        assert [(e.n, e.event, e.data) for e in again] == [(final.n, SUCCESS, final.data)]
        for junk in ("", "banana", "0-" + "0" * 16, "7-XYZ", final.id + "0"):
            async with stream(pipe, rid, last_event_id=junk) as sse:
                fresh = await sse.rest()
            assert [(e.n, e.id) for e in fresh] == [(1, "1-" + final.id.split("-")[1])], junk


# --- who may read, and what -------------------------------------------------------------------


async def test_owner_check_as_get_requests() -> None:
    """No token is 401; another subject, an unknown id, and an id not in the issued form (even
    one that is a stored key) are 404, all in the error envelope."""
    async with pipeline() as pipe:
        rid = await start_job(pipe)
        anon = await pipe.client.get(f"/requests/{rid}/events")
        assert anon.status_code == 401 and anon.json()["error"]["code"] == "unauthorized"
        assert anon.headers["www-authenticate"].startswith("Bearer")
        stored = ResultRecord(status=QUEUED, detail="queued", owner="ada")
        await pipe.store.create("not-issued", stored, ttl_s=60)
        await pipe.store.create(rid.upper(), stored, ttl_s=60)
        for sub, path_id in (("bob", rid), ("ada", str(uuid.uuid4())),
                             ("ada", "not-issued"), ("ada", rid.upper())):
            r = await get_events(pipe, path_id, sub=sub)
            assert r.status_code == 404, (sub, path_id)
            assert r.json() == {"error": {
                "code": "not_found",
                "message": "no such request (unknown, expired, or not yours)"}}
        ok = await pipe.client.get(f"/requests/{rid}", headers=pipe.auth("ada"))
        assert ok.status_code == 200


async def test_a_record_that_expires_ends_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record that goes away (its TTL) ends the stream without a final event; a reconnect
    then gets 404."""
    monkeypatch.setattr(events, "SAFETY_REREAD_S", 0.1)
    async with pipeline() as pipe:
        rid = str(uuid.uuid4())
        short = ResultRecord(status=QUEUED, detail="queued", owner="ada")
        await pipe.store.create(rid, short, ttl_s=0.4)
        async with stream(pipe, rid) as sse:
            got = await sse.rest(timeout=3)
        assert [e.event for e in got] == [QUEUED]
        assert (await get_events(pipe, rid)).status_code == 404


# --- how changes arrive -----------------------------------------------------------------------


async def test_a_write_without_a_notice_is_found_by_the_safety_reread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A record written with no notice (a core that does not announce) reaches the stream at
    the next safety re-read."""
    monkeypatch.setattr(events, "SAFETY_REREAD_S", 0.2)
    async with pipeline() as pipe:
        rid = await start_job(pipe)
        async with stream(pipe, rid) as sse:
            assert (await sse.next()) is not None
            running = ResultRecord(status=RUNNING, detail="quietly", progress=7, owner="ada")
            await pipe.store.client.set(pipe.settings.key_prefix + rid, running.to_json())
            event = await sse.next(timeout=2)
        assert event is not None and event.data["detail"] == "quietly"


async def test_a_lost_subscription_is_restored_and_streams_reread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When the API's Redis connection drops, the subscription comes back with backoff and
    every open stream re-reads, so a change made meanwhile arrives long before the safety
    re-read."""
    monkeypatch.setattr(events, "SAFETY_REREAD_S", 60.0)
    async with pipeline() as pipe:
        rid = await start_job(pipe)
        bystander = fakeredis.FakeAsyncRedis(server=pipe.memory.redis)  # no faults
        try:
            async with stream(pipe, rid) as sse:
                assert (await sse.next()) is not None
                client_faults(pipe.store.client).reset_peer.on(for_s=1.5)  # the API's only
                await asyncio.sleep(0.2)
                running = ResultRecord(status=RUNNING, detail="meanwhile", owner="ada")
                await bystander.set(pipe.settings.key_prefix + rid, running.to_json())
                event = await sse.next(timeout=10)
            assert event is not None and event.data["detail"] == "meanwhile"
        finally:
            await bystander.aclose()


async def test_running_writes_are_announced_on_the_updates_channel() -> None:
    """BEGIN (when it starts) and PROGRESS publish the request id on <prefix>reference:updates;
    refused writes publish nothing; subscribe_updates also hears finals, subscribe_finals only
    those."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    store = RedisResultStore(client, key_prefix="p:")
    assert store.updates_channel == "p:reference:updates"
    updates = await store.subscribe_updates()
    finals = await store.subscribe_finals()
    try:
        running = ResultRecord(status=RUNNING, detail="running", progress=0)
        assert await store.begin("r1", "w1", running, claim_ttl_s=5, running_ttl_s=60) \
            == "started"
        assert await store.begin("r1", "w2", running, claim_ttl_s=5, running_ttl_s=60) \
            == "held"
        assert await store.put("r1", running.evolve(progress=50), ttl_s=60) is True
        assert await store.finish("r1", "w1", ResultRecord(status=SUCCESS, detail="d"),
                                  ttl_s=60) is True
        assert await store.put("r1", running, ttl_s=60) is False  # after the final
        assert await store.begin("r1", "w3", running, claim_ttl_s=5, running_ttl_s=60) \
            == "final"
        heard = [await updates.next(1.0) for _ in range(3)]
        assert heard == ["r1", "r1", "r1"]  # begin, progress, finish
        assert await updates.next(0.2) is None
        assert await finals.next(1.0) == "r1"
        assert await finals.next(0.2) is None
    finally:
        await updates.close()
        await finals.close()
        await client.aclose()


async def test_scripts_called_with_the_earlier_argv_still_write() -> None:
    """A core that passes only the earlier ARGV of BEGIN and PROGRESS gets its writes done,
    without a notice."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    store = RedisResultStore(client)
    updates = await store.subscribe_updates()
    try:
        begin = client.register_script(lua("begin"))
        progress = client.register_script(lua("progress"))
        state = await begin(keys=["r", "final:{r}", "claim:{r}", "starts:{r}"],
                            args=["w", 5000, '{"status":"Running","detail":"a"}', 60000, 5,
                                  60000])
        assert state == b"started"
        assert await progress(keys=["r", "final:{r}"],
                              args=['{"status":"Running","detail":"b"}', 60000]) == 1
        record = await store.get("r")
        assert record is not None and record.detail == "b"
        assert await updates.next(0.3) is None
    finally:
        await updates.close()
        await client.aclose()


# --- the bounds -------------------------------------------------------------------------------


async def test_streams_beyond_the_cap_get_503_until_one_disconnects(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_STREAMS open streams the process answers 503 with Retry-After; a client that
    disconnects frees its place."""
    monkeypatch.setattr(events, "MAX_STREAMS", 2)
    async with pipeline() as pipe:
        rid = await start_job(pipe)
        async with stream(pipe, rid) as one:
            assert (await one.next()) is not None
            async with stream(pipe, rid) as two:
                assert (await two.next()) is not None
                full = await get_events(pipe, rid)
                assert full.status_code == 503
                assert full.headers["retry-after"] == "1"
                assert full.json()["error"]["code"] == "unavailable"
            # `two` disconnected: its place comes back.

            async def reopened() -> bool:
                async with stream(pipe, rid) as three:
                    return three.response.status_code == 200 and (
                        await three.next()) is not None

            assert await eventually(reopened, timeout=3, interval=0.05)


async def test_silence_is_broken_by_heartbeat_comments(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream with nothing to say sends a comment line every HEARTBEAT_S."""
    monkeypatch.setattr(events, "HEARTBEAT_S", 0.1)
    async with pipeline() as pipe:
        rid = await start_job(pipe)
        async with stream(pipe, rid) as sse:
            assert (await sse.next()) is not None
            await asyncio.sleep(0.55)
            assert sse.comments.count(": keep-alive") >= 3
            assert len(sse.events) == 1


async def test_a_stream_ends_at_its_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream lasts DURATION_FACTOR x the request timeout, then says so in a comment and
    ends; the client resumes where it was."""
    monkeypatch.setattr(events, "DURATION_FACTOR", 0.1)  # 0.1 x 5 s
    async with pipeline() as pipe:
        rid = await start_job(pipe)
        started = time.monotonic()
        async with stream(pipe, rid) as sse:
            got = await sse.rest(timeout=5)
            lasted = time.monotonic() - started
        assert [e.event for e in got] == [QUEUED]
        assert 0.4 <= lasted < 3
        assert any("time limit" in c for c in sse.comments)
        await pipe.add_worker()
        async with stream(pipe, rid, last_event_id=got[0].id) as sse:
            more = await sse.rest(timeout=5)
        assert more[0].n == 2 and more[-1].event == SUCCESS
