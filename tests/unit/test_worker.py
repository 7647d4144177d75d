"""The core worker against the in-memory broker and the Redis adapters on fakeredis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from reference.bootstrap import MemoryBackends, Services, build
from reference.clock import now_ms
from reference.errors import BrokerUnavailable
from reference.messages import Principal, RequestMessage, encode
from reference.ports import DIRECT_REPLY_TO
from reference.records import FAIL, QUEUED, RUNNING, SUCCESS, ResultRecord
from reference.settings import Settings
from reference.worker import REPLY_TIMEOUT_S, CoreWorker
from tests.helpers import eventually, final_record


@dataclass
class Rig:
    services: Services
    worker: CoreWorker
    settings: Settings
    memory: MemoryBackends

    async def publish(self, action: str, params: dict[str, Any], rid: str, **kw: Any) -> None:
        principal = kw.pop("principal", Principal("alice", ("users:write",)))
        message = RequestMessage(action, params, rid, principal=principal, **kw)
        await self.services.broker.publish(self.settings.queue, encode(message), message_id=rid)

    async def publish_raw(self, body: bytes) -> None:
        await self.services.broker.publish(self.settings.queue, body, message_id="raw")

    async def queue_drained(self) -> bool:
        server = self.memory.broker
        queue = server.queues[self.settings.queue]
        return not queue.ready and self.worker.in_flight == 0

    async def dlq(self) -> list[bytes]:
        return [m.body for m in self.memory.broker.queues[self.settings.queue + ".dlq"].ready]


async def make_rig(memory: MemoryBackends | None = None, **changes: Any) -> Rig:
    settings = Settings(jwt_secret="x" * 32, queue="work", claim_ttl_s=1.0,
                        shutdown_timeout_s=2.0, concurrency=4).replace(**changes)
    memory = memory or MemoryBackends()
    services = build(settings, memory=memory)
    await services.start()
    worker = services.worker()
    await worker.start()
    return Rig(services, worker, settings, memory)


async def test_create_user_succeeds_and_is_acked(rig: Rig) -> None:
    """createUser ends in Success with the user as result, and the message is acked."""
    await rig.publish("createUser", {"name": "Hong", "email": "hong@example.com"}, "r1")
    record = await final_record(rig.services.results, "r1")
    assert record.status == SUCCESS
    assert record.detail == "user created (ID: 1)"
    assert record.result == {"id": 1, "name": "Hong", "email": "hong@example.com"}
    assert record.owner == "alice"
    assert record.started_at is not None and record.finished_at is not None
    assert await eventually(rig.queue_drained)
    assert (await rig.services.users.get(1)).to_dict() == record.result


async def test_running_and_progress_precede_the_final_record(rig: Rig) -> None:
    """runJob writes Running, then rising progress, then Success at 100."""
    await rig.publish("runJob", {"duration_ms": 400, "steps": 4}, "job")
    seen: list[tuple[str, int | None]] = []

    async def probe() -> bool:
        record = await rig.services.results.get("job")
        if record is not None and (not seen or seen[-1] != (record.status, record.progress)):
            seen.append((record.status, record.progress))
        return record is not None and record.is_final

    await eventually(probe, interval=0.005)
    assert seen[0][0] == RUNNING
    progress = [p for s, p in seen if s == RUNNING]
    assert progress == sorted(progress) and len(progress) >= 3
    assert seen[-1] == (SUCCESS, 100)


async def test_final_record_means_ack_without_running(rig: Rig) -> None:
    """A (re)delivered message whose record is already final is acked and not run again."""
    done = ResultRecord(status=SUCCESS, detail="done elsewhere", owner="alice")
    await rig.services.results.put("r1", done, ttl_s=60)
    await rig.publish("createUser", {"name": "Hong", "email": "hong@example.com"}, "r1")
    assert await eventually(rig.queue_drained)
    assert (await rig.services.results.get("r1")) == done
    users, _ = await rig.services.users.list(limit=10, after=None)
    assert users == []


async def test_poison_message_is_dead_lettered_and_worker_goes_on(rig: Rig) -> None:
    """A body that is not JSON lands in the DLQ, and the next message is still processed."""
    await rig.publish_raw(b"\x00 not json")
    await rig.publish("getUser", {"id": 7}, "after")
    record = await final_record(rig.services.results, "after")
    assert record.error_code == "not_found"
    assert await rig.dlq() == [b"\x00 not json"]


async def test_poison_with_request_id_gets_a_fail_record(rig: Rig) -> None:
    """A message lacking `action` is dead-lettered and its readable request_id records Fail."""
    await rig.publish_raw(orjson.dumps({"request_id": "p1", "params": {}}))
    record = await final_record(rig.services.results, "p1")
    assert record.status == FAIL and record.error_code == "validation"
    assert "action" in record.detail
    assert len(await eventually(rig.dlq)) == 1


@pytest.mark.parametrize(
    ("action", "params", "code", "field"),
    [
        ("launchRocket", {}, "unknown_action", None),
        ("createUser", {"name": "X"}, "validation", "email"),
        ("createUser", {"name": "X", "email": "no-at-sign"}, "validation", "email"),
        ("getUser", {"id": "7"}, "validation", "id"),
        ("runJob", {"duration_ms": 0, "fail": True}, "job_failed", None),
        ("deleteUser", {"id": 99}, "not_found", "id"),
    ],
)
async def test_failures_get_their_error_code(
    rig: Rig, action: str, params: dict[str, Any], code: str, field: str | None
) -> None:
    """Each kind of failure ends in one Fail record carrying its contract error code."""
    await rig.publish(action, params, "f1")
    record = await final_record(rig.services.results, "f1")
    assert record.status == FAIL
    assert record.error is not None and record.error["code"] == code
    assert record.error.get("field") == field


async def test_deadline_in_the_past_is_not_run(rig: Rig) -> None:
    """A message whose deadline has passed records deadline_exceeded and does no work."""
    await rig.publish("createUser", {"name": "Late", "email": "late@example.com"}, "d1",
                      deadline=int(now_ms()) - 1000)
    record = await final_record(rig.services.results, "d1")
    assert record.error_code == "deadline_exceeded"
    users, _ = await rig.services.users.list(limit=10, after=None)
    assert users == []


async def test_concurrency_limit_bounds_running_requests() -> None:
    """With concurrency 2, never more than 2 requests are Running at once (and 2 are)."""
    r = await make_rig(concurrency=2)
    try:
        ids = [f"j{i}" for i in range(5)]
        for rid in ids:
            await r.services.results.put(rid, ResultRecord(status=QUEUED, detail=""), ttl_s=60)
            await r.publish("runJob", {"duration_ms": 200, "steps": 2}, rid)
        most = 0

        async def probe() -> bool:
            nonlocal most
            records = await r.services.results.get_many(ids)
            most = max(most, sum(1 for x in records if x and x.status == RUNNING))
            return all(x is not None and x.is_final for x in records)

        await eventually(probe, interval=0.005)
        assert most == 2
    finally:
        await r.worker.stop()
        await r.services.close()


async def test_graceful_stop_finishes_in_flight_work() -> None:
    """stop() stops consuming and lets a running job finish within the shutdown bound."""
    r = await make_rig(shutdown_timeout_s=3.0)
    try:
        await r.publish("runJob", {"duration_ms": 300, "steps": 3}, "long")
        await eventually(lambda: _status_is(r, "long", RUNNING))
        await r.publish("runJob", {"duration_ms": 0}, "later")
        await asyncio.sleep(0.01)
        await r.worker.stop()
        record = await r.services.results.get("long")
        assert record is not None and record.status == SUCCESS
    finally:
        await r.services.close()


async def test_stop_hands_back_work_that_outlives_the_bound() -> None:
    """Work still running when the shutdown bound ends goes back to the queue, not lost."""
    r = await make_rig(shutdown_timeout_s=0.2)
    try:
        await r.publish("runJob", {"duration_ms": 1200, "steps": 12}, "slow")
        await eventually(lambda: _status_is(r, "slow", RUNNING))
        await r.worker.stop()
        queue = r.memory.broker.queues[r.settings.queue]
        assert len(queue.ready) == 1 and queue.ready[0].redelivered
        record = await r.services.results.get("slow")
        assert record is not None and not record.is_final
        # A new worker picks it up and (since the claim was released) runs it to the end.
        other = await make_rig(memory=r.memory)
        try:
            record = await final_record(other.services.results, "slow", timeout=10)
            assert record.status == SUCCESS
        finally:
            await other.worker.stop()
            await other.services.close()
    finally:
        await r.services.close()


async def test_copy_held_by_a_live_worker_is_not_run_twice(rig: Rig) -> None:
    """While another live worker holds the claim, a copy waits for its final record, then acks."""
    await rig.services.results.begin("c1", "other-worker", ResultRecord(status=RUNNING, detail=""),
                                     claim_ttl_s=5, running_ttl_s=60)
    await rig.publish("createUser", {"name": "Once", "email": "once@example.com"}, "c1")
    await asyncio.sleep(0.3)
    assert rig.worker.in_flight == 1  # waiting, not running
    done = ResultRecord(status=SUCCESS, detail="made by the other worker")
    await rig.services.results.put("c1", done, ttl_s=60)
    assert await eventually(rig.queue_drained)
    users, _ = await rig.services.users.list(limit=10, after=None)
    assert users == []
    assert rig.worker.processed == 0


async def _status_is(r: Rig, rid: str, status: str) -> bool:
    record = await r.services.results.get(rid)
    return record is not None and record.status == status


async def test_two_copies_in_one_worker_run_once(rig: Rig) -> None:
    """Two copies of one request reaching the same worker at once run the action once."""
    await rig.publish("runJob", {"duration_ms": 200, "steps": 2}, "twin")
    await rig.publish("runJob", {"duration_ms": 200, "steps": 2}, "twin")
    record = await final_record(rig.services.results, "twin")
    assert record.status == SUCCESS
    assert await eventually(rig.queue_drained)
    assert rig.worker.runs_started == 1


async def test_claim_is_renewed_while_a_long_action_runs() -> None:
    """A job outliving its claim TTL keeps its claim: a copy at another worker waits, and the
    job runs once."""
    first = await make_rig(claim_ttl_s=0.3, concurrency=1)  # so the copy goes to `second`
    second = await make_rig(memory=first.memory, claim_ttl_s=0.3)
    try:
        await first.publish("runJob", {"duration_ms": 1200, "steps": 6}, "long-claim")
        await eventually(lambda: _status_is(first, "long-claim", RUNNING))
        await first.publish("runJob", {"duration_ms": 1200, "steps": 6}, "long-claim")
        record = await final_record(first.services.results, "long-claim")
        assert record.status == SUCCESS
        assert await eventually(first.queue_drained)
        assert first.worker.runs_started + second.worker.runs_started == 1
    finally:
        for r in (first, second):
            await r.worker.stop()
            await r.services.close()


async def test_hand_backs_do_not_spend_the_delivery_limit() -> None:
    """A request handed back by three clean stops (each releases its claim) is not given up
    at a delivery limit of 2: only claims that end without a release count as deaths."""
    memory = MemoryBackends()
    first = await make_rig(memory=memory, shutdown_timeout_s=0.1, delivery_limit=2)
    await first.publish("runJob", {"duration_ms": 3000, "steps": 30}, "long")
    current = first
    for _ in range(3):
        await eventually(lambda c=current: _status_is(c, "long", RUNNING))
        await current.worker.stop()
        await current.services.close()
        current = await make_rig(memory=memory, shutdown_timeout_s=0.1, delivery_limit=2)
    try:
        record = await final_record(current.services.results, "long", timeout=15)
        assert record.status == SUCCESS, record
        assert memory.broker.dead_letters(current.settings.queue) == []
    finally:
        await current.worker.stop()
        await current.services.close()


# --- reply notices (the API's `reply` completion) ---------------------------------------------


@dataclass
class Replies:
    """An API-side connection to the rig's broker that consumes its Direct Reply-To replies,
    noting each with what the store held when it arrived."""

    client: Any
    rig: Rig
    got: asyncio.Queue[tuple[bytes, ResultRecord | None]]

    async def publish(self, action: str, params: dict[str, Any], rid: str, *,
                      reply_to: str = DIRECT_REPLY_TO) -> None:
        message = RequestMessage(action, params, rid,
                                 principal=Principal("alice", ("users:write",)))
        await self.client.publish(self.rig.settings.queue, encode(message), message_id=rid,
                                  reply_to=reply_to)

    async def next(self, timeout: float = 5.0) -> tuple[bytes, ResultRecord | None]:
        return await asyncio.wait_for(self.got.get(), timeout)


@pytest.fixture
async def api(rig: Rig) -> AsyncIterator[Replies]:
    """An API-side connection that consumes its replies, closed after the test."""
    client = rig.memory.broker.client()
    await client.connect()
    got: asyncio.Queue[tuple[bytes, ResultRecord | None]] = asyncio.Queue()

    async def on_reply(body: bytes) -> None:
        await got.put((body, await rig.services.results.get(body.decode())))

    await client.consume_replies(on_reply)
    yield Replies(client, rig, got)
    await client.close()


async def test_the_reply_names_the_request_once_its_record_is_final(rig: Rig, api: Replies) -> None:
    """A message with reply_to gets, after its final record, a reply whose body is its id."""
    await api.publish("createUser", {"name": "Ada", "email": "ada@example.com"}, "r1")
    body, record = await api.next()
    assert body == b"r1"
    assert record is not None and record.status == SUCCESS
    assert await eventually(rig.queue_drained)


async def test_a_redelivery_already_final_is_acked_and_replied(rig: Rig, api: Replies) -> None:
    """A copy whose record is final already is acked without running, and replied to: the
    first reply may have been lost with the worker that wrote the record."""
    done = ResultRecord(status=SUCCESS, detail="done elsewhere", owner="alice")
    await rig.services.results.put("r1", done, ttl_s=60)
    await api.publish("createUser", {"name": "Ada", "email": "ada@example.com"}, "r1")
    body, record = await api.next()
    assert (body, record) == (b"r1", done)
    assert await eventually(rig.queue_drained)
    assert rig.worker.runs_started == 0


@pytest.mark.parametrize("kind", ["refused", "poison"])
async def test_requests_ended_without_a_run_are_replied_too(rig: Rig, api: Replies,
                                                            kind: str) -> None:
    """A request refused before any work (a Fail record, acked) or poison with a readable id
    (a Fail record, dead-lettered) gets its reply after the record."""
    if kind == "refused":
        await api.publish("launchRocket", {}, "r1")
    else:
        await api.client.publish(rig.settings.queue,
                                 orjson.dumps({"request_id": "r1", "params": {}}),
                                 message_id="r1", reply_to=DIRECT_REPLY_TO)
    body, record = await api.next()
    assert body == b"r1"
    assert record is not None and record.status == FAIL
    assert await eventually(rig.queue_drained)


@pytest.mark.parametrize("failure", ["raises", "hangs"])
async def test_a_failed_reply_neither_blocks_the_ack_nor_changes_the_outcome(
        rig: Rig, api: Replies, failure: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply that fails or hangs is logged; the message is acked, the record stays Success,
    and the worker is free again within the reply's bound."""
    tried: list[str] = []

    async def send_reply(address: str, body: bytes, *, correlation_id: str) -> None:
        tried.append(correlation_id)
        if failure == "raises":
            raise BrokerUnavailable("rabbitmq unavailable: connection lost")
        await asyncio.Event().wait()

    monkeypatch.setattr(rig.services.broker, "send_reply", send_reply)
    await api.publish("createUser", {"name": "Ada", "email": "ada@example.com"}, "r1")
    record = await final_record(rig.services.results, "r1")
    assert record.status == SUCCESS

    async def acked() -> bool:
        return rig.memory.broker.unsettled() == 0 and tried == ["r1"]

    async def free() -> bool:
        return rig.worker.in_flight == 0

    # Acked before the reply's bound ran out: the reply does not hold the ack back.
    assert await eventually(acked, timeout=REPLY_TIMEOUT_S / 2)
    assert await eventually(free, timeout=REPLY_TIMEOUT_S + 2)
    assert await rig.dlq() == []
    assert api.got.empty()


@pytest.mark.parametrize("reply_to", [None, "work"])
async def test_no_reply_unless_asked_for_at_a_direct_reply_to_address(
        rig: Rig, reply_to: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without reply_to, or with one that is not a Direct Reply-To address (a queue name:
    the worker is no relay into other queues), no reply is sent."""
    sent: list[str] = []

    async def send_reply(address: str, body: bytes, *, correlation_id: str) -> None:
        sent.append(address)

    monkeypatch.setattr(rig.services.broker, "send_reply", send_reply)
    message = RequestMessage("listUsers", {}, "r1")
    await rig.services.broker.publish(rig.settings.queue, encode(message), message_id="r1",
                                      reply_to=reply_to)
    await final_record(rig.services.results, "r1")
    assert await eventually(rig.queue_drained)
    assert sent == []
