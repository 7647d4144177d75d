"""One named test per bug fixed in 438ccea ("worker settles every delivery"), each of which
fails on the code before that commit.

Tests that need an API the old code did not have (the fault objects, `stop_task`, `sever`)
import it inside the test, so that the module still loads on the old code; each says which
fix to revert by hand to see it fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import fakeredis
import httpx
import orjson
import pytest
from pydantic import model_validator

from reference import actions
from reference.adapters.redis_results import RedisResultStore
from reference.bootstrap import MemoryBackends, Services, build
from reference.builtin_actions import BUILTIN
from reference.completion import BatchCompletion, PushCompletion
from reference.errors import BrokerUnavailable
from reference.fakes.pipeline import Pipeline, running_pipeline
from reference.messages import Principal, RequestMessage, decode, encode
from reference.ports import Delivery
from reference.records import FAIL, SUCCESS, ResultRecord
from reference.schemas import Params
from reference.settings import Settings
from reference.worker import CoreWorker
from tests.helpers import eventually, final_record

SECRET = "regressions-" + "x" * 24


def settings_for(queue: str, **changes: Any) -> Settings:
    return Settings(jwt_secret=SECRET, queue=queue, claim_ttl_s=1.0, shutdown_timeout_s=1.0,
                    concurrency=4, request_timeout_s=5.0).replace(**changes)


@dataclass
class Rig:
    """A worker on the in-memory backends, with the services it was built from."""

    services: Services
    worker: CoreWorker
    settings: Settings
    memory: MemoryBackends

    async def publish(self, action: str, params: dict[str, Any], rid: str) -> None:
        message = RequestMessage(action, params, rid, principal=Principal("alice"))
        await self.publish_raw(encode(message), rid)

    async def publish_raw(self, body: bytes, rid: str = "raw") -> None:
        await self.services.broker.publish(self.settings.queue, body, message_id=rid)

    async def drained(self) -> bool:
        queue = self.memory.broker.queues[self.settings.queue]
        return not queue.ready and self.worker.in_flight == 0


@contextlib.asynccontextmanager
async def worker_rig(queue: str, **changes: Any) -> AsyncIterator[Rig]:
    settings = settings_for(queue, **changes)
    memory = MemoryBackends()
    services = build(settings, memory=memory)
    await services.start()
    worker = services.worker()
    await worker.start()
    try:
        yield Rig(services, worker, settings, memory)
    finally:
        await worker.stop()
        await services.close()


async def started_services(settings: Settings, memory: MemoryBackends) -> Services:
    """Services with their own broker connection and store client, as another process has."""
    services = build(settings, memory=memory, require_key=False)
    await services.start()
    return services


# --- 1. a worker hung after its action: the per-request renewer's cancellation was lost -------


async def test_bug1_every_request_finishes_with_a_claim_ttl_far_below_the_work() -> None:
    """With a claim TTL far shorter than each job, many jobs in a row all finish, no claim is
    left held, and the worker's one claim renewer is still alive."""
    # Before the fix, each job had its own renewer, cancelled when the job ended; a cancel
    # that landed inside a store call was swallowed (Python 3.11's wait_for, in redis-py's
    # send), the job awaited its renewer for ever and its delivery was never settled. It is
    # a race: on the old code, 10 runs of these 128 jobs out of 10 hung between 25 and 94.
    async with worker_rig("regress-renewer", claim_ttl_s=0.05, concurrency=16) as r:
        # Given many jobs whose steps together outlast the claim TTL,
        ids = [f"job-{i}" for i in range(128)]
        for rid in ids:
            await r.publish("runJob", {"duration_ms": 30, "steps": 3}, rid)

        # when the worker runs them all,
        async def all_final() -> bool:
            records = await r.services.results.get_many(ids)
            return all(x is not None and x.is_final for x in records)

        # then none of them hangs,
        assert await eventually(all_final, timeout=20)
        records = await r.services.results.get_many(ids)
        assert {x.status for x in records if x is not None} == {SUCCESS}
        # no claim is held, and the worker's one renewer lives on.
        assert await eventually(r.drained)
        assert r.worker.claims_held == frozenset()
        renewer = r.worker._renewer
        assert renewer is not None and not renewer.done()


async def test_bug1_stop_task_stops_a_task_that_swallows_its_first_cancellation() -> None:
    """stop_task cancels again when a task swallowed the first cancellation, and returns True
    once the task has ended."""
    # New API (reference.backoff did not exist before the fix); checked by making stop_task
    # cancel only once in a copy of HEAD: then this test fails on its timeout.
    from reference.backoff import stop_task

    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    loop = asyncio.get_running_loop()
    task = loop.create_task(stubborn())
    await asyncio.sleep(0)
    # stop_task runs in a task of its own, so that the bound on it cannot cancel `task` too.
    stopper = loop.create_task(stop_task(task, timeout_s=3))
    done, _ = await asyncio.wait({stopper}, timeout=5)
    if not done:  # stop_task hangs: end both before failing
        stopper.cancel()
        await asyncio.wait({stopper, task}, timeout=5)
    assert stopper in done, "stop_task did not return"
    assert stopper.result() is True
    assert task.cancelled() and swallowed == 2


# --- 2. an unexpected exception leaked the delivery ----------------------------------------


class _Exploding(Params):
    @model_validator(mode="before")
    @classmethod
    def _explode(cls, data: Any) -> Any:
        raise RuntimeError("a validator with a bug")


async def _never_run(ctx: actions.ActionContext, params: Any) -> actions.Outcome:
    raise AssertionError("the validator failed; the action must not run")


async def test_bug2_unexpected_errors_dead_letter_and_leave_the_worker_its_slots(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Messages whose handling raises an unexpected error are dead-lettered with a Fail
    `internal` record, and a worker with as many slots as bad messages still processes the
    next one."""
    explode = actions.Action("explode", _Exploding, _never_run)
    monkeypatch.setattr(actions, "builtin", lambda: actions.ActionRegistry([*BUILTIN, explode]))
    async with worker_rig("regress-leak", concurrency=2) as r:
        # Given two messages that fill both slots of the worker and then blow up,
        for rid in ("bad-1", "bad-2"):
            await r.publish_raw(orjson.dumps({"action": "explode", "params": {},
                                              "request_id": rid}), rid)
        # when a normal message follows,
        await r.publish("runJob", {"duration_ms": 0, "steps": 1}, "good")
        # then it is processed,
        good = await final_record(r.services.results, "good")
        assert good.status == SUCCESS
        # and the bad ones ended in Fail `internal` and in the dead-letter queue.
        for rid in ("bad-1", "bad-2"):
            record = await final_record(r.services.results, rid)
            assert (record.status, record.error_code) == (FAIL, "internal")
        assert await eventually(r.drained)
        dead = r.memory.broker.dead_letters(r.settings.queue)
        assert sorted(decode(d.body).request_id for d in dead) == ["bad-1", "bad-2"]
        assert r.memory.broker.unsettled() == 0


async def test_bug2_a_non_ascii_digit_cursor_is_a_validation_failure_and_acked() -> None:
    """A listUsers cursor of "²" (a digit to str.isdigit, not to int) ends in Fail
    `validation`, and the message is acked, not dead-lettered."""
    async with worker_rig("regress-cursor") as r:
        body = orjson.dumps({"action": "listUsers", "params": {"cursor": "²"},
                             "request_id": "cursor-1"})
        await r.publish_raw(body, "cursor-1")
        record = await final_record(r.services.results, "cursor-1")
        assert (record.status, record.error_code) == (FAIL, "validation")
        assert record.error is not None and record.error.get("field") == "cursor"
        assert await eventually(r.drained)
        assert r.memory.broker.dead_letters(r.settings.queue) == []
        assert r.memory.broker.unsettled() == 0


# --- 3. batch and push completion stopped on their first unexpected error ------------------


class FirstReadsFail:
    """The real store, except that the first `get` and the first `get_many` raise an error
    that no store error mapping knows (a test double of the store, not of the completion)."""

    def __init__(self, inner: RedisResultStore) -> None:
        self.inner = inner
        self.raised: list[str] = []

    def _fail_once(self, name: str) -> None:
        if name not in self.raised:
            self.raised.append(name)
            raise RuntimeError(f"unexpected failure of {name}")

    async def get(self, request_id: str) -> ResultRecord | None:
        self._fail_once("get")
        return await self.inner.get(request_id)

    async def get_many(self, request_ids: Sequence[str]) -> list[ResultRecord | None]:
        self._fail_once("get_many")
        return await self.inner.get_many(request_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("mode", ["batch", "push"])
async def test_bug3_completion_outlives_an_unexpected_store_error(mode: str) -> None:
    """After the store raised an unexpected error type, later waits still end with their
    results, and close() returns normally."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    store = FirstReadsFail(RedisResultStore(client))
    completion: Any = (BatchCompletion(store, interval_s=0.01) if mode == "batch"
                       else PushCompletion(store, safety_interval_s=0.5))
    await completion.start()
    try:
        for rid in ("first", "second", "third"):
            # Given a request being waited on, when its final record is written,
            watch = completion.watch(rid)
            await store.put(rid, ResultRecord(status=SUCCESS, detail=rid), ttl_s=60)
            # then the wait ends with it, the first one despite the failing reads.
            record = await watch.result(5.0)
            assert record is not None and record.detail == rid
        assert "get_many" in store.raised
        if mode == "push":
            assert "get" in store.raised  # the listener's read of a noticed record
        async with asyncio.timeout(10):
            await completion.close()
    finally:
        await client.aclose()


# --- 4. a transport closed mid-command (uvloop's RuntimeError) was not mapped ----------------


@pytest.mark.parametrize("mode", ["poll", "batch", "push"])
async def test_bug4_a_closed_transport_never_turns_a_waiting_request_into_a_500(
    mode: str,
) -> None:
    """A Redis transport closed mid-command, while a synchronous request waits and on the
    worker's claim, ends in the result or a 504 with Location, never a 500."""
    # Fault objects are new; checked by reverting adapters.redis_errors.redis_call to its old
    # list of mapped exception types in a copy of HEAD: the worker then writes Fail `internal`
    # and the client gets 500.
    from reference.fakes.redis_server import client_faults

    settings = settings_for(f"regress-transport-{mode}", completion=mode, request_timeout_s=3.0,
                            safety_poll_ms=100.0)
    async with running_pipeline(settings, workers=0) as p:
        worker_services = await started_services(p.settings, p.memory)
        async with httpx.AsyncClient(base_url=p.base_url, timeout=10) as http:
            # A first request loads the worker's scripts into Redis (a first EVALSHA is
            # answered NOSCRIPT, and that error reply would hide the fault below).
            warm = worker_services.worker()
            await warm.start()
            first = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
            assert first.status_code == 200, first.text
            await warm.stop()
            # Given a synchronous request that was queued and is being waited on,
            call = asyncio.ensure_future(http.post("/jobs", json={"duration_ms": 100,
                                                                  "steps": 2},
                                                   headers=p.auth()))
            assert await eventually(lambda: _queued(p))
            # when every Redis connection loses its transport mid-command for a while,
            fault = p.memory.faults.store.closed_transport.on(for_s=0.3)
            assert await eventually(lambda: _true(not fault.active))
            # and then the worker's first command (its claim: applied, reply lost) too,
            own = client_faults(worker_services.results._redis)  # type: ignore[attr-defined]
            own.closed_transport.on_call(1)
            worker = worker_services.worker()
            await worker.start()
            response = await asyncio.wait_for(call, 10)
        # then the client gets its result, or a 504 that says where to read it later.
        assert own.closed_transport.fired == 1
        assert response.status_code in {200, 504}, response.text
        if response.status_code == 504:
            assert response.headers["location"].startswith("/requests/")
        else:
            assert response.json() == {"duration_ms": 100, "steps": 2}
        await worker.stop()
        await worker_services.close()


async def _queued(p: Pipeline) -> bool:
    return await p.services.broker.message_count(p.settings.queue) == 1


async def _true(value: bool) -> bool:
    return value


# --- 5. no catch-all error handler ---------------------------------------------------------


async def test_bug5_an_unexpected_error_in_a_route_is_a_500_with_the_envelope(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception no handler expects, raised inside a route, is answered 500 with the
    `{"error": {"code": "internal", ...}}` envelope, its details kept out of the answer."""
    async with running_pipeline(settings_for("regress-catch-all"), workers=0) as p:

        async def broken_get(request_id: str) -> ResultRecord | None:
            raise KeyError("a store with a bug")  # a broken store double, not the API

        monkeypatch.setattr(p.services.results, "get", broken_get)
        async with httpx.AsyncClient(base_url=p.base_url, timeout=10) as http:
            r = await http.get(f"/requests/{uuid.uuid4()}", headers=p.auth())
        assert r.status_code == 500
        assert r.json() == {"error": {"code": "internal", "message": "internal error"}}
        assert "a store with a bug" not in r.text


async def test_bug5_readyz_is_503_when_a_check_raises_something_unexpected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """/readyz answers 503 naming the failed check when a check raises an unexpected
    exception, and 200 again once the check answers."""
    async with running_pipeline(settings_for("regress-readyz"), workers=0) as p:

        async def broken_ping() -> None:
            raise RuntimeError("a broker client with a bug")

        async with httpx.AsyncClient(base_url=p.base_url, timeout=10) as http:
            assert (await http.get("/readyz")).status_code == 200
            with monkeypatch.context() as patch:
                patch.setattr(p.services.broker, "ping", broken_ping)
                r = await http.get("/readyz")
            assert r.status_code == 503, r.text
            assert r.json()["status"] == "unavailable"
            assert r.json()["broker"].startswith("unavailable")
            assert r.json()["store"] == "ok"
            assert (await http.get("/readyz")).status_code == 200


# --- 6. no delivery limit by default: a message that kills its worker came back for ever ----


async def test_bug6_a_request_that_kills_its_workers_is_given_up_after_the_limit() -> None:
    """On a classic queue with delivery_limit=2, a request whose run kills its worker every
    time is run twice, then ends in a Fail record naming the delivery limit and in the DLQ,
    and is not run again."""
    # `sever` and per-client store faults are new; checked by taking the start limit out of
    # the begin script (adapters/redis_results.py) in a copy of HEAD: the request is then run
    # by every new worker and never given up.
    from reference.fakes.redis_server import client_faults

    settings = settings_for("regress-limit", delivery_limit=2, claim_ttl_s=0.2,
                            shutdown_timeout_s=0.05)
    assert settings.queue_type == "classic"
    memory = MemoryBackends()
    publisher = await started_services(settings, memory)
    try:
        message = RequestMessage("runJob", {"duration_ms": 60_000, "steps": 600}, "killer",
                                 principal=Principal("alice"))
        await publisher.broker.publish(settings.queue, encode(message), message_id="killer")
        runs = 0
        for attempt in range(settings.delivery_limit + 3):
            # Given a fresh worker,
            services = await started_services(settings, memory)
            worker = services.worker(worker_id=f"worker-{attempt}")
            await worker.start()
            # when it either starts the request or gives it up,
            outcome = await eventually(partial(_started_or_final, worker, publisher),
                                       timeout=10)
            if outcome == "final":
                await worker.stop()
                await services.close()
                break
            runs += 1
            # it dies mid-run: its connection drops, its store link is gone, its work stops.
            services.broker.sever()  # type: ignore[attr-defined]
            client_faults(services.results._redis).reset_peer.on()  # type: ignore[attr-defined]
            await worker.stop()
            await services.close()
        # Then the request was run as often as the limit allows, and given up after.
        assert runs == settings.delivery_limit
        record = await final_record(publisher.results, "killer")
        assert record.status == FAIL
        assert "delivery limit" in record.detail
        assert record.error is not None and "delivery limit" in record.error["message"]
        dead = memory.broker.dead_letters(settings.queue)
        assert [decode(d.body).request_id for d in dead] == ["killer"]
        assert await publisher.broker.message_count(settings.queue) == 0
        assert memory.broker.unsettled() == 0
    finally:
        await publisher.close()


async def _started_or_final(worker: CoreWorker, publisher: Services) -> str | None:
    if worker.runs_started:
        return "started"
    record = await publisher.results.get("killer")
    if record is not None and record.is_final and worker.in_flight == 0:
        return "final"
    return None


# --- 7. the fake disagreed with RabbitMQ on errors --------------------------------------------


async def test_bug7_a_fake_ack_after_the_connection_closed_is_broker_unavailable() -> None:
    """On the in-memory broker, settling a delivery after its connection closed raises
    BrokerUnavailable (as RabbitMQ does), not DeliveryAlreadySettled."""
    from reference.fakes.memory_broker import InMemoryBroker

    server = InMemoryBroker()
    client = server.client()
    await client.connect()
    await client.declare_queue("q")
    await client.publish("q", b"m", message_id="m")
    delivery = await eventually(lambda: client.get("q"))
    assert delivery is not None
    await client.close()
    with pytest.raises(BrokerUnavailable):
        await delivery.ack()


async def test_bug7_a_fake_broker_in_an_outage_delivers_nothing_and_refuses_acks() -> None:
    """While the fake broker's connection_loss is on, nothing is delivered and acks fail with
    BrokerUnavailable; once it is off, the unsettled message comes back redelivered."""
    # The fault API is new; on the old code the same outage (`available = False`) kept
    # delivering and let the ack through (checked in a copy of the old code).
    from reference.fakes.memory_broker import InMemoryBroker
    from tests.contract.harness import Inbox

    server = InMemoryBroker()
    client = server.client()
    await client.connect()
    await client.declare_queue("q")
    inbox = Inbox()
    await client.consume("q", inbox, prefetch=1)
    await client.publish("q", b"m", message_id="m")
    first = await inbox.next()
    assert first.redelivered is False
    # Given an outage,
    server.faults.connection_loss.on()
    try:
        # when the consumer acks, then the ack fails and nothing is delivered meanwhile.
        with pytest.raises(BrokerUnavailable):
            await first.ack()
        assert await inbox.nothing_within(0.3)
    finally:
        server.faults.connection_loss.off()
    # After it, the message comes back, marked redelivered.
    again = await inbox.next()
    assert (again.body, again.redelivered) == (b"m", True)
    await again.ack()
    await client.close()


# --- 8. a record from another core crashed the API -------------------------------------------


BAD_RECORDS: dict[str, ResultRecord | bytes] = {
    "success-without-id": ResultRecord(status=SUCCESS, detail="user created",
                                       result={"name": "X", "email": "x@x.example"}),
    "string-result": ResultRecord(status=SUCCESS, detail="user created", result="user 7"),
    "not-json": b"\x00 this is not JSON",
    "unknown-status": b'{"status": "Done", "detail": "finished"}',
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
async def test_bug8_a_record_that_breaks_the_contract_is_a_502_bad_record(case: str) -> None:
    """A final record written by another core that breaks the contract (a createUser Success
    without `id`, a string result, a value that is not JSON, an unknown status) is answered
    502 `bad_record`."""
    async with running_pipeline(settings_for(f"regress-record-{case}"),
                                workers=0) as p:
        stand_in = await started_services(p.settings, p.memory)
        raw = fakeredis.FakeAsyncRedis(server=p.memory.redis)
        bad = BAD_RECORDS[case]

        async def answer(delivery: Delivery) -> None:
            # A worker stand-in: consumes the request and writes the bad record as final.
            rid = decode(delivery.body).request_id
            if isinstance(bad, ResultRecord):
                await stand_in.results.put(rid, bad, ttl_s=60)
            else:
                await raw.set(p.settings.key_prefix + rid, bad)
            await delivery.ack()

        await stand_in.broker.consume(p.settings.queue, answer, prefetch=1)
        try:
            async with httpx.AsyncClient(base_url=p.base_url, timeout=10) as http:
                r = await http.post("/users", json={"name": "X", "email": "x@x.example"},
                                    headers=p.auth())
            assert r.status_code == 502, r.text
            assert r.json()["error"]["code"] == "bad_record"
        finally:
            await raw.aclose()
            await stand_in.close()
