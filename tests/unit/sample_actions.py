"""Actions a test loads by name, as REFERENCE_ACTIONS or an entry point would."""

from __future__ import annotations

from reference.actions import Action, ActionContext, Outcome, Params, Route


class Echo(Params):
    text: str


async def echo(ctx: ActionContext, p: Echo) -> Outcome:
    """Say it back."""
    return Outcome("echoed", {"text": p.text, "by": ctx.resources.get("voice", "nobody")})


ECHO = Action("echo", Echo, echo, route=Route("POST", "/echo"))
SHOUT = Action("shout", Echo, echo)
BOTH = [ECHO, SHOUT]


def make_actions() -> list[Action]:
    return [SHOUT]


NOT_AN_ACTION = 42
