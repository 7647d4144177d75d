"""The greetings actions: declared once, validated by the API and by the worker."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from reference.actions import Action, ActionContext, Outcome, Params, Route
from reference.errors import NotFound
from reference.schemas import Result


class Greet(Params):
    name: Annotated[str, Field(min_length=1, max_length=50)]
    times: Annotated[int, Field(ge=1, le=5)] = 1


class Greeting(Result):
    text: str
    by: str


class Farewell(Params):
    name: str


async def greet(ctx: ActionContext, p: Greet) -> Outcome:
    """Greet someone, up to five times."""
    for n in range(1, p.times + 1):
        await ctx.report_progress(100 * n // p.times, f"greeting {n} of {p.times}")
    by = ctx.principal.sub if ctx.principal is not None else "a trusted producer"
    return Outcome(f"greeted {p.name}", Greeting(text=" ".join([f"hello {p.name}"] * p.times),
                                                by=by))


async def farewell(ctx: ActionContext, p: Farewell) -> Outcome:
    """Say goodbye to a user of the built-in users store, found by name."""
    users, _ = await ctx.users.list(limit=100, after=None)
    if not any(u.name == p.name for u in users):
        raise NotFound(f"no user called {p.name}")
    return Outcome(f"farewell {p.name}", {"text": f"goodbye {p.name}"})


ACTIONS = [
    Action("greet", Greet, greet, Greeting, Route("POST", "/greetings")),
    Action("farewell", Farewell, farewell, route=Route("POST", "/farewells")),
]
