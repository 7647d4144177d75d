"""The greetings actions through the whole pipeline, with nothing but the reference plugin."""

from __future__ import annotations

from reference.actions import Action, Outcome, Params, Route
from reference.fakes.plugin import reference_faults


async def test_greet_over_http(reference_pipeline):
    """The entry point registered `greet`: the API routes it and the worker runs it."""
    pipe = reference_pipeline
    r = await pipe.client.post("/greetings", json={"name": "Ada", "times": 2},
                               headers=pipe.auth("bob"))
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "hello Ada hello Ada", "by": "bob"}


async def test_bad_params_are_refused_before_the_queue(reference_pipeline):
    """The declared schema answers 422 naming the field."""
    pipe = reference_pipeline
    r = await pipe.client.post("/greetings", json={"name": "Ada", "times": 9},
                               headers=pipe.auth())
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "times"


async def test_an_action_can_use_the_users_store(reference_pipeline):
    """`farewell` reads the built-in users: 404 before the user exists, 200 after."""
    pipe = reference_pipeline
    headers = pipe.auth("admin", roles=["users:write"])
    r = await pipe.client.post("/farewells", json={"name": "Ada"}, headers=headers)
    assert r.status_code == 404
    await pipe.client.post("/users", json={"name": "Ada", "email": "ada@example.com"},
                           headers=headers)
    r = await pipe.client.post("/farewells", json={"name": "Ada"}, headers=headers)
    assert r.json() == {"text": "goodbye Ada"}


async def test_a_broker_outage_is_a_503(reference_pipeline):
    """With the broker cut (in memory only), a call gets 503 with the error envelope."""
    pipe = reference_pipeline
    reference_faults(pipe).broker.connection_loss.on()
    r = await pipe.client.post("/greetings", json={"name": "Ada"}, headers=pipe.auth())
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"


class Shout(Params):
    text: str


async def shout(ctx, p: Shout) -> Outcome:
    return Outcome("shouted", {"text": p.text.upper()})


async def test_ten_lines(reference_pipeline_factory):
    """A new action, registered in the test itself, answers over HTTP."""
    pipe = await reference_pipeline_factory(
        actions=[Action("shout", Shout, shout, route=Route("POST", "/shout"))])
    r = await pipe.client.post("/shout", json={"text": "hi"}, headers=pipe.auth())
    assert r.json() == {"text": "HI"}
