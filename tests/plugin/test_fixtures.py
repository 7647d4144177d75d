"""The pytest plugin's fixtures, used as a user's project would use them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from reference.actions import Action, ActionContext, Outcome, Params, Route
from reference.fakes.pipeline import Pipeline
from reference.fakes.plugin import PipelineFactory, reference_faults
from reference.schemas import Result
from reference.settings import Settings


class Greet(Params):
    name: str


class Greeting(Result):
    greeting: str


async def greet(ctx: ActionContext, p: Greet) -> Outcome:
    """Greet someone by name."""
    await ctx.report_progress(50, "thinking")
    who = ctx.principal.sub if ctx.principal else "nobody"
    return Outcome("greeted", Greeting(greeting=f"hello {p.name}, from {who}"))


GREET = Action("greet", Greet, greet, Greeting, Route("POST", "/greetings"))


@pytest.fixture
def reference_actions() -> Sequence[Action]:
    return [GREET]


async def test_a_registered_action_answers_over_http(reference_pipeline: Pipeline) -> None:
    """An action registered through the `reference_actions` fixture is routed, run by the
    worker with the caller as principal, and answered synchronously."""
    pipe = reference_pipeline
    r = await pipe.client.post("/greetings", json={"name": "Ada"}, headers=pipe.auth("bob"))
    assert r.status_code == 200, r.text
    assert r.json() == {"greeting": "hello Ada, from bob"}
    record = await pipe.store.get(r.headers["X-Request-ID"])
    assert (record.status, record.owner, record.progress) == ("Success", "bob", 100)


async def test_the_action_schema_refuses_bad_params_before_publishing(
    reference_pipeline: Pipeline,
) -> None:
    """Params that break the action's model get 422 naming the field, and nothing is queued."""
    pipe = reference_pipeline
    r = await pipe.client.post("/greetings", json={"name": 7}, headers=pipe.auth())
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "validation", "message": "name must be a string",
                                 "field": "name"}
    assert pipe.workers[0].processed == 0


async def test_the_openapi_document_shows_the_action(reference_pipeline: Pipeline) -> None:
    """/openapi.json shows the registered action with its params schema."""
    doc = (await reference_pipeline.client.get("/openapi.json")).json()
    op = doc["paths"]["/greetings"]["post"]
    assert op["operationId"] == "greet" and op["summary"] == "Greet someone by name."
    assert doc["components"]["schemas"]["Greet"]["required"] == ["name"]


async def test_builtin_actions_stay_beside_registered_ones(reference_pipeline: Pipeline) -> None:
    """The users CRUD still works next to a registered action."""
    pipe = reference_pipeline
    r = await pipe.client.post("/users", json={"name": "Ada", "email": "ada@example.com"},
                               headers=pipe.auth())
    assert r.status_code == 201 and r.headers["Location"] == f"/users/{r.json()['id']}"


async def test_the_factory_takes_settings_and_workers(
    reference_pipeline_factory: PipelineFactory, reference_settings: Settings,
) -> None:
    """The factory form starts a pipeline with other settings and several workers."""
    pipe = await reference_pipeline_factory(reference_settings.replace(request_timeout_s=0.3),
                                            workers=2, actions=[GREET])
    assert len(pipe.workers) == 2
    r = await pipe.client.post("/jobs", json={"duration_ms": 2000, "steps": 2},
                               headers=pipe.auth())
    assert r.status_code == 504 and r.headers["Location"].startswith("/requests/")


async def test_faults_reach_the_pipeline(reference_pipeline: Pipeline) -> None:
    """`.faults` switches a broker outage on: a call gets 503, and works again once off."""
    pipe = reference_pipeline
    faults = reference_faults(pipe)
    faults.broker.connection_loss.on()
    r = await pipe.client.post("/greetings", json={"name": "Ada"}, headers=pipe.auth())
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    faults.broker.connection_loss.off()
    async with asyncio.timeout(10):  # the client reconnects with backoff
        while r.status_code != 200:
            await asyncio.sleep(0.05)
            r = await pipe.client.post("/greetings", json={"name": "Ada"}, headers=pipe.auth())


async def test_handlers_reach_the_resources_the_registry_provides(
    reference_pipeline_factory: PipelineFactory,
) -> None:
    """An object offered with `registry.provide` reaches handlers as `ctx.resources[name]`."""
    from tests.unit.sample_actions import ECHO

    pipe = await reference_pipeline_factory(actions=[ECHO])
    pipe.actions.provide("voice", "robot")
    r = await pipe.client.post("/echo", json={"text": "hi"}, headers=pipe.auth())
    assert r.json() == {"text": "hi", "by": "robot"}
