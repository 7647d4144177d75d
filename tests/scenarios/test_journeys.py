"""Every journey of scenarios/, in one process on the fakes and on real brokers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from reference.fakes.pipeline import running_pipeline
from reference.scenarios import SCENARIOS, Call, Context, Reply, ScenarioFailure, run_async
from reference.settings import Settings
from tests.conftest import AMQP_URL, REDIS_URL, delete_queue_and_keys, require_server
from tests.scenarios.conftest import context_for, httpx_sender

SECRET = "scenario-secret-" + "q" * 24


def base_settings(**changes: object) -> Settings:
    return Settings(jwt_secret=SECRET, request_timeout_s=0.4, claim_ttl_s=1.0,
                    shutdown_timeout_s=1.0).replace(**changes)


TARGETS = [
    ("memory", "poll"), ("memory", "batch"), ("memory", "push"), ("memory", "reply"),
    pytest.param(("real", "poll"), marks=pytest.mark.real),
    pytest.param(("real", "push"), marks=pytest.mark.real),
    pytest.param(("real", "reply"), marks=pytest.mark.real),
]


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(params=TARGETS, ids=lambda t: "-".join(t), scope="module",
                        loop_scope="module")
async def target(request: pytest.FixtureRequest) -> AsyncIterator[tuple]:
    """One running pipeline per target, shared by the journeys (their emails are unique)."""
    where, completion = request.param
    unique = uuid.uuid4().hex[:12]
    if where == "memory":
        settings = base_settings(queue=f"scen-{unique}", completion=completion)
    else:
        settings = base_settings(broker_url=require_server(AMQP_URL, 5672),
                                 store_url=require_server(REDIS_URL, 6379),
                                 queue=f"scen-{unique}", key_prefix=f"scen{unique}:",
                                 completion=completion)
    async with running_pipeline(settings) as pipe:
        async with httpx.AsyncClient(base_url=pipe.base_url, timeout=10) as http:
            yield pipe, http
    if where == "real":
        await delete_queue_and_keys(settings.queue, settings.key_prefix)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_journey_runs_to_the_end(target: tuple, name: str) -> None:
    """Each journey gets every reply it expects, on the fakes and on real brokers."""
    pipe, http = target
    calls = await run_async(SCENARIOS[name](context_for(pipe)), httpx_sender(http))
    assert calls >= 4


async def test_an_unexpected_reply_fails_the_journey() -> None:
    """A journey that gets a status it did not expect raises ScenarioFailure."""
    def journey(ctx: Context):  # type: ignore[no-untyped-def]
        yield Call("GET", "/users/1", "no token", expect=frozenset({200}))

    async def send(call: Call) -> Reply:
        return Reply(401, {}, {"error": {"code": "unauthorized"}})

    ctx = Context(token=lambda sub: "t", unique=lambda: "u")
    with pytest.raises(ScenarioFailure, match="got 401"):
        await run_async(journey(ctx), send)
