"""The HTTP pipeline with REFERENCE_COMPLETION=reply on the fakes: answers come through the
in-memory broker's Direct Reply-To, and a lost reply is answered by the safety sweep."""

from __future__ import annotations

import asyncio

import pytest

from reference.fakes.pipeline import running_pipeline
from tests.api.conftest import api_settings
from tests.helpers import eventually

pytestmark = pytest.mark.asyncio(loop_scope="function")


async def test_every_answer_comes_by_reply() -> None:
    """With the safety sweep a minute away, a user's lifecycle and 20 concurrent jobs are all
    answered, each by one reply."""
    settings = api_settings(queue="reply-api", completion="reply", safety_poll_ms=60_000.0)
    async with running_pipeline(settings) as p:
        h = p.auth()
        created = await p.client.post("/users", json={"name": "Ada", "email": "ada@r.example"},
                                      headers=h)
        assert created.status_code == 201, created.text
        user = created.json()
        renamed = await p.client.put(f"/users/{user['id']}", json={"name": "Ada L."}, headers=h)
        assert (renamed.status_code, renamed.json()["name"]) == (200, "Ada L.")
        assert (await p.client.delete(f"/users/{user['id']}", headers=h)).status_code == 204
        gone = await p.client.get(f"/users/{user['id']}", headers=h)
        assert gone.status_code == 404
        jobs = await asyncio.gather(*(p.client.post("/jobs", json={"duration_ms": 5},
                                                    headers=h) for _ in range(20)))
        assert [r.status_code for r in jobs] == [200] * 20
        assert p.app.ctx.completion.replies == 24


async def test_lost_replies_are_answered_by_the_safety_sweep() -> None:
    """With every reply dropped on its way (fault reply_lost), requests are still answered,
    by the sweep, and the replies were sent."""
    settings = api_settings(queue="reply-lost", completion="reply", safety_poll_ms=100.0)
    async with running_pipeline(settings) as p:
        p.faults.broker.reply_lost.on()
        answered = await asyncio.gather(*(p.client.post("/jobs", json={"duration_ms": 0},
                                                        headers=p.auth()) for _ in range(3)))
        assert [r.status_code for r in answered] == [200] * 3
        assert p.app.ctx.completion.replies == 0
        assert p.faults.broker.reply_lost.fired == 3


async def test_a_respond_async_request_asks_for_no_reply() -> None:
    """`Prefer: respond-async` publishes without reply_to: nobody waits, nothing is sent."""
    settings = api_settings(queue="reply-async", completion="reply", safety_poll_ms=60_000.0)
    async with running_pipeline(settings) as p:
        r = await p.client.post("/jobs", json={"duration_ms": 0}, headers={
            **p.auth(), "Prefer": "respond-async"})
        assert r.status_code == 202

        async def done() -> bool:
            read = await p.client.get(r.headers["location"], headers=p.auth())
            return bool(read.json()["status"] == "Success")

        assert await eventually(done)
        await asyncio.sleep(0.05)  # time for a reply, had one been sent
        assert p.faults.broker.reply_lost.calls == 0  # no send_reply reached the broker
        assert p.app.ctx.completion.replies == 0
