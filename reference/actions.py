"""The actions a core worker runs: their parameter checks and their work.

`validate` is shared by the API (to answer 422 before publishing) and the worker (which checks
again, since anyone who can reach the queue can publish).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from reference.errors import JobFailed, UnknownAction, ValidationFailed
from reference.messages import Principal
from reference.ports import UserRepository
from reference.records import MalformedRecord
from reference.validation import check_known, read_bool, read_email, read_int, read_str

MAX_USER_ID = 2**53 - 1  # ids stay exact in every JSON client
MAX_PAGE = 100
DEFAULT_PAGE = 20

ProgressReporter = Callable[[int, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ActionContext:
    request_id: str
    users: UserRepository
    report_progress: ProgressReporter
    principal: Principal | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    detail: str
    result: Any = None


Validator = Callable[[dict[str, Any]], dict[str, Any]]
Handler = Callable[[ActionContext, dict[str, Any]], Awaitable[Outcome]]
ResultCheck = Callable[[Any], None]


def _any_result(result: Any) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Action:
    name: str
    validate: Validator
    run: Handler
    check_result: ResultCheck = _any_result  # raises MalformedRecord for a result it can't be


# --- results: records are input, a core in another language may write them ------------------


def _check_user(result: Any, where: str = "result") -> None:
    if not isinstance(result, dict):
        raise MalformedRecord(f"{where} must be a user object")
    if type(result.get("id")) is not int or not 1 <= result["id"] <= MAX_USER_ID:
        raise MalformedRecord(f"{where}.id must be a positive integer")
    for name in ("name", "email"):
        if not isinstance(result.get(name), str):
            raise MalformedRecord(f"{where}.{name} must be a string")


def _check_no_result(result: Any) -> None:
    if result is not None:
        raise MalformedRecord("result must be absent")


def _check_page(result: Any) -> None:
    if not isinstance(result, dict) or not isinstance(result.get("items"), list):
        raise MalformedRecord("result must be an object with an items list")
    for i, item in enumerate(result["items"]):
        _check_user(item, f"result.items[{i}]")
    cursor = result.get("next_cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise MalformedRecord("result.next_cursor must be a string or null")


def _check_job(result: Any) -> None:
    if not isinstance(result, dict) or any(
            type(result.get(name)) is not int for name in ("duration_ms", "steps")):
        raise MalformedRecord("result must be an object with integer duration_ms and steps")


# --- createUser -----------------------------------------------------------------------------


def _validate_create(params: dict[str, Any]) -> dict[str, Any]:
    check_known(params, {"name", "email"})
    return {
        "name": read_str(params, "name", max_len=200),
        "email": read_email(params, "email"),
    }


async def _create_user(ctx: ActionContext, p: dict[str, Any]) -> Outcome:
    user = await ctx.users.create(p["name"], p["email"], request_id=ctx.request_id)
    return Outcome(f"user created (ID: {user.id})", user.to_dict())


# --- getUser / deleteUser ---------------------------------------------------------------------


def _validate_id_only(params: dict[str, Any]) -> dict[str, Any]:
    check_known(params, {"id"})
    return {"id": read_int(params, "id", low=1, high=MAX_USER_ID)}


async def _get_user(ctx: ActionContext, p: dict[str, Any]) -> Outcome:
    user = await ctx.users.get(p["id"])
    return Outcome(f"user found (ID: {user.id})", user.to_dict())


async def _delete_user(ctx: ActionContext, p: dict[str, Any]) -> Outcome:
    await ctx.users.delete(p["id"])
    return Outcome(f"user deleted (ID: {p['id']})", None)


# --- listUsers --------------------------------------------------------------------------------


def _validate_list(params: dict[str, Any]) -> dict[str, Any]:
    check_known(params, {"limit", "cursor"})
    limit = read_int(params, "limit", low=1, high=MAX_PAGE, default=DEFAULT_PAGE)
    cursor = params.get("cursor")
    after: int | None = None
    if cursor is not None:
        # isascii: "²".isdigit() is true, and int("²") raises.
        if (not isinstance(cursor, str) or not cursor.isascii() or not cursor.isdigit()
                or len(cursor) > 16):
            raise ValidationFailed("cursor is not a cursor this service gave out", field="cursor")
        after = int(cursor)
    return {"limit": limit, "cursor": None if after is None else str(after)}


async def _list_users(ctx: ActionContext, p: dict[str, Any]) -> Outcome:
    after = None if p["cursor"] is None else int(p["cursor"])
    users, next_after = await ctx.users.list(limit=p["limit"], after=after)
    result = {
        "items": [u.to_dict() for u in users],
        "next_cursor": None if next_after is None else str(next_after),
    }
    return Outcome(f"{len(users)} users", result)


# --- updateUser -------------------------------------------------------------------------------


def _validate_update(params: dict[str, Any]) -> dict[str, Any]:
    check_known(params, {"id", "name", "email"})
    out = {
        "id": read_int(params, "id", low=1, high=MAX_USER_ID),
        "name": read_str(params, "name", max_len=200, required=False),
        "email": read_email(params, "email", required=False),
    }
    if out["name"] is None and out["email"] is None:
        raise ValidationFailed("give name or email to change", field="name")
    return out


async def _update_user(ctx: ActionContext, p: dict[str, Any]) -> Outcome:
    user = await ctx.users.update(p["id"], name=p["name"], email=p["email"])
    return Outcome(f"user updated (ID: {user.id})", user.to_dict())


# --- runJob -----------------------------------------------------------------------------------


def _validate_job(params: dict[str, Any]) -> dict[str, Any]:
    check_known(params, {"duration_ms", "steps", "fail"})
    return {
        "duration_ms": read_int(params, "duration_ms", low=0, high=600_000),
        "steps": read_int(params, "steps", low=1, high=1000, default=10),
        "fail": read_bool(params, "fail", default=False),
    }


async def _run_job(ctx: ActionContext, p: dict[str, Any]) -> Outcome:
    steps: int = p["steps"]
    pause = p["duration_ms"] / 1000 / steps
    for step in range(1, steps + 1):
        if pause:
            await asyncio.sleep(pause)
        await ctx.report_progress(100 * step // steps, f"step {step} of {steps}")
    if p["fail"]:
        raise JobFailed(f"job failed after {steps} steps, as asked")
    return Outcome(
        f"job done in {steps} steps", {"duration_ms": p["duration_ms"], "steps": steps}
    )


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("createUser", _validate_create, _create_user, _check_user),
        Action("getUser", _validate_id_only, _get_user, _check_user),
        Action("listUsers", _validate_list, _list_users, _check_page),
        Action("updateUser", _validate_update, _update_user, _check_user),
        Action("deleteUser", _validate_id_only, _delete_user, _check_no_result),
        Action("runJob", _validate_job, _run_job, _check_job),
    )
}


def lookup(name: str) -> Action:
    try:
        return ACTIONS[name]
    except KeyError:
        raise UnknownAction(f"unknown action: {name}") from None


def validate(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise the params of an action; raises UnknownAction or ValidationFailed."""
    return lookup(name).validate(params)
