"""The whole pipeline in one process: API, worker and fakes in one event loop, app started once."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import pytest

from reference.clock import now_ms
from reference.domain import User
from reference.fakes.pipeline import Pipeline, running_pipeline
from reference.messages import Principal, RequestMessage, encode
from reference.worker import CoreWorker, WorkerConfig
from tests.api.conftest import api_settings
from tests.helpers import eventually, final_record

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_user_lifecycle(pipe: Pipeline, http: httpx.AsyncClient) -> None:
    """Create, read, list, update and delete a user, each answered as if synchronous."""
    h = pipe.auth()
    created = await http.post("/users", json={"name": "Hong Gildong", "email": "HONG@x.example"},
                              headers=h)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["name"] == "Hong Gildong" and user["email"] == "hong@x.example"
    assert created.headers["location"] == f"/users/{user['id']}"

    got = await http.get(f"/users/{user['id']}", headers=h)
    assert (got.status_code, got.json()) == (200, user)

    listed = await http.get("/users", params={"limit": 100}, headers=h)
    assert listed.status_code == 200
    assert user in listed.json()["items"]

    updated = await http.put(f"/users/{user['id']}", json={"name": "Gildong"}, headers=h)
    assert (updated.status_code, updated.json()["name"]) == (200, "Gildong")

    deleted = await http.delete(f"/users/{user['id']}", headers=h)
    assert (deleted.status_code, deleted.content) == (204, b"")
    gone = await http.get(f"/users/{user['id']}", headers=h)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"


async def test_duplicate_email_is_409(pipe: Pipeline, http: httpx.AsyncClient) -> None:
    """A second user with the same email gets 409 conflict."""
    body = {"name": "Dup", "email": "dup@x.example"}
    assert (await http.post("/users", json=body, headers=pipe.auth())).status_code == 201
    again = await http.post("/users", json=body, headers=pipe.auth())
    assert again.status_code == 409
    assert again.json()["error"] == {"code": "conflict", "field": "email",
                                     "message": "email already in use: dup@x.example"}


async def test_list_pages_with_cursor(pipe: Pipeline, http: httpx.AsyncClient) -> None:
    """Following next_cursor walks every user once, in id order."""
    for i in range(5):
        r = await http.post("/users", json={"name": f"P{i}", "email": f"page{i}@x.example"},
                            headers=pipe.auth())
        assert r.status_code == 201
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get("/users", params=params, headers=pipe.auth())).json()
        seen += [u["id"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(set(seen)) and len(seen) >= 5


async def test_job_with_progress_and_headers(pipe: Pipeline, http: httpx.AsyncClient) -> None:
    """POST /jobs returns its result, X-Request-ID names the request, Server-Timing its parts."""
    r = await http.post("/jobs", json={"duration_ms": 50, "steps": 5}, headers=pipe.auth())
    assert r.status_code == 200
    assert r.json() == {"duration_ms": 50, "steps": 5}
    rid = r.headers["x-request-id"]
    timing = r.headers["server-timing"]
    parts = dict(re.findall(r"(\w+);dur=([\d.]+)", timing))
    assert set(parts) == {"queue", "work", "notice", "total"}
    assert float(parts["work"]) >= 40
    record = (await http.get(f"/requests/{rid}", headers=pipe.auth())).json()
    assert record["status"] == "Success" and record["progress"] == 100
    assert record["request_id"] == rid


async def test_failing_job_is_422(pipe: Pipeline, http: httpx.AsyncClient) -> None:
    """A job asked to fail ends in Fail job_failed, answered 422."""
    r = await http.post("/jobs", json={"duration_ms": 0, "fail": True}, headers=pipe.auth())
    assert r.status_code == 422
    assert r.json()["status"] == "Fail" and r.json()["error"]["code"] == "job_failed"


async def test_respond_async_then_read(pipe: Pipeline, http: httpx.AsyncClient) -> None:
    """Prefer: respond-async gets 202 with Location at once; the record there ends in Success."""
    h = {**pipe.auth(), "Prefer": "respond-async"}
    r = await http.post("/jobs", json={"duration_ms": 100, "steps": 2}, headers=h)
    assert r.status_code == 202
    location = r.headers["location"]
    assert location == f"/requests/{r.json()['request_id']}"
    assert r.headers["x-request-id"] == r.json()["request_id"]

    async def done() -> dict[str, Any] | None:
        body = (await http.get(location, headers=pipe.auth())).json()
        return body if body["status"] == "Success" else None

    record = await eventually(done)
    assert record["result"] == {"duration_ms": 100, "steps": 2}


async def test_requests_are_shown_to_their_owner_only(
    pipe: Pipeline, http: httpx.AsyncClient
) -> None:
    """GET /requests/{id} is 404 for another subject, for an unknown id, and for no owner."""
    r = await http.post("/jobs", json={"duration_ms": 0}, headers=pipe.auth("alice"))
    rid = r.headers["x-request-id"]
    assert (await http.get(f"/requests/{rid}", headers=pipe.auth("alice"))).status_code == 200
    assert (await http.get(f"/requests/{rid}", headers=pipe.auth("bob"))).status_code == 404
    assert (await http.get("/requests/nope", headers=pipe.auth("alice"))).status_code == 404
    await pipe.services.results.put("ownerless", _final("x"), ttl_s=60)
    assert (await http.get("/requests/ownerless", headers=pipe.auth())).status_code == 404


async def test_metrics_count_requests(pipe: Pipeline, http: httpx.AsyncClient) -> None:
    """/metrics counts answered requests by route and status and has the latency histogram."""
    await http.get("/users/999999", headers=pipe.auth())
    text = (await http.get("/metrics")).text
    assert re.search(r'reference_http_requests_total\{method="GET",route="users/<id:str>",'
                     r'status="404"\} [1-9]', text)
    assert "reference_request_seconds_bucket" in text
    assert "reference_inflight_waits 0.0" in text


async def test_poison_message_does_not_stop_the_worker(
    pipe: Pipeline, http: httpx.AsyncClient
) -> None:
    """A poison message published by another producer is dead-lettered; the API keeps working."""
    await pipe.services.broker.publish(pipe.settings.queue, b"{{{", message_id="poison")
    r = await http.post("/jobs", json={"duration_ms": 0}, headers=pipe.auth())
    assert r.status_code == 200
    dlq = pipe.memory.broker.queues[pipe.settings.queue + ".dlq"]
    assert await eventually(lambda: _true(any(m.body == b"{{{" for m in dlq.ready)))


async def test_deadline_passed_is_readable_as_504_code(
    pipe: Pipeline, http: httpx.AsyncClient
) -> None:
    """A message past its deadline records deadline_exceeded, which its owner can read."""
    rid = str(uuid.uuid4())
    msg = RequestMessage("runJob", {"duration_ms": 0}, rid, principal=Principal("alice"),
                         deadline=int(now_ms()) - 5)
    await pipe.services.broker.publish(pipe.settings.queue, encode(msg), message_id=rid)
    record = await final_record(pipe.services.results, rid)
    assert record.error_code == "deadline_exceeded"
    body = (await http.get(f"/requests/{rid}", headers=pipe.auth("alice"))).json()
    assert body["error"]["code"] == "deadline_exceeded"


async def test_timeout_is_504_and_the_result_is_readable_later() -> None:
    """No final record within request_timeout: 504 with Location; the work goes on."""
    async with running_pipeline(api_settings(queue="slow", request_timeout_s=0.2)) as p:
        async with httpx.AsyncClient(base_url=p.base_url, timeout=5) as http:
            r = await http.post("/jobs", json={"duration_ms": 600, "steps": 3}, headers=p.auth())
            assert r.status_code == 504
            body = r.json()
            assert body["status"] in {"Queued", "Running"}
            assert r.headers["location"] == f"/requests/{body['request_id']}"

            async def done() -> bool:
                later = await http.get(r.headers["location"], headers=p.auth())
                return later.json()["status"] == "Success"

            assert await eventually(done)


async def test_a_nacked_publish_is_503_naming_the_request_whose_record_says_not_queued(
) -> None:
    """A publish the broker refuses gets 503 with X-Request-ID naming the request, and its
    record (the caller's own) says Fail `unavailable`, so the client knows it never ran."""
    async with running_pipeline(api_settings(queue="nacked")) as p:
        async with httpx.AsyncClient(base_url=p.base_url, timeout=5) as http:
            p.faults.broker.nack.on_call(1)
            refused = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "unavailable"
            rid = refused.headers["x-request-id"]
            record = await http.get(f"/requests/{rid}", headers=p.auth())
            assert record.status_code == 200
            assert (record.json()["status"], record.json()["error"]["code"]) == (
                "Fail", "unavailable")
            other = await http.get(f"/requests/{rid}", headers=p.auth(sub="mallory"))
            assert other.status_code == 404


async def test_broker_outage_is_503_and_readyz_says_so() -> None:
    """With the broker gone: new requests 503 at once, /readyz 503, reads still work."""
    async with running_pipeline(api_settings(queue="outage")) as p:
        async with httpx.AsyncClient(base_url=p.base_url, timeout=5) as http:
            ok = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
            p.memory.broker.available = False
            try:
                r = await http.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
                assert r.status_code == 503
                assert (await http.get("/readyz")).status_code == 503
                read = await http.get(f"/requests/{ok.headers['x-request-id']}",
                                      headers=p.auth())
                assert read.status_code == 200
            finally:
                p.memory.broker.available = True
            assert (await http.get("/readyz")).status_code == 200


class StallAfterCreate:
    """Wraps the real repository: creates the user, then hangs, as a worker about to die."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.created = asyncio.Event()

    async def create(self, name: str, email: str, *, request_id: str) -> User:
        user: User = await self.inner.create(name, email, request_id=request_id)
        self.created.set()
        await asyncio.Event().wait()
        return user

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_worker_dies_mid_action_and_the_user_is_created_once() -> None:
    """A worker dies after creating the user, before its final record: the message comes
    back to another worker, and the client still gets 201 for one single user."""
    async with running_pipeline(api_settings(queue="dying"), workers=0) as p:
        doomed_svc = await _services_for(p)
        s = p.settings
        doomed = CoreWorker(
            doomed_svc.broker, doomed_svc.results, StallAfterCreate(doomed_svc.users),
            WorkerConfig(queue=s.queue, concurrency=1, claim_ttl_s=s.claim_ttl_s,
                         shutdown_timeout_s=0.1),
        )
        await doomed.start()
        async with httpx.AsyncClient(base_url=p.base_url, timeout=10) as http:
            call = asyncio.ensure_future(http.post(
                "/users", json={"name": "Once", "email": "once@x.example"}, headers=p.auth()))
            await asyncio.wait_for(doomed._users.created.wait(), 5)  # type: ignore[attr-defined]
            # Given the user exists and no final record was written, when the worker dies
            # (its connection drops and its work is cancelled), then another worker takes over.
            await doomed_svc.broker.close()
            await doomed.stop()
            await p.add_worker()
            r = await asyncio.wait_for(call, 10)
        assert r.status_code == 201, r.text
        users, _ = await p.services.users.list(limit=10, after=None)
        assert [u.to_dict() for u in users] == [r.json()]
        await doomed_svc.close()


async def _services_for(p: Pipeline) -> Any:
    from reference.bootstrap import build

    svc = build(p.settings, memory=p.memory, require_key=False)
    await svc.start()
    return svc


def _final(detail: str) -> Any:
    from reference.records import SUCCESS, ResultRecord

    return ResultRecord(status=SUCCESS, detail=detail)


async def _true(value: bool) -> bool:
    return value
