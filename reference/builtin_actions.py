"""The built-in actions: users CRUD and the long demo job, as ordinary registered actions."""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    model_validator,
)
from pydantic_core import CoreSchema

from reference.actions import Action, ActionContext, NoResult, Outcome, Route
from reference.errors import JobFailed
from reference.schemas import FieldProblem, Params, Result

MAX_USER_ID = 2**53 - 1  # ids stay exact in every JSON client
MAX_PAGE = 100
DEFAULT_PAGE = 20
MAX_CURSOR_DIGITS = 16


def _email(value: str) -> str:
    """RFC 5322 / 6531 syntax as email-validator checks it (no DNS lookup), then lower-cased
    whole, so that uniqueness ignores case."""
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        raise ValueError("must be an email address") from None
    return str(checked.normalized).lower()


_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs"})  # controls, format (bidi overrides, zero-width)


def _printable(value: str) -> str:
    if any(unicodedata.category(ch) in _UNPRINTABLE for ch in value):
        raise ValueError("must not contain control or format characters")
    return value


def _cursor(value: str) -> str:
    # isascii: "²".isdigit() is true, and int("²") raises.
    if not value.isascii() or not value.isdigit() or len(value) > MAX_CURSOR_DIGITS:
        raise ValueError("is not a cursor this service gave out")
    return str(int(value))


# --- what the validators accept, as JSON Schema (pydantic's own schema would say less) ------


@dataclass(frozen=True)
class Documented:
    """Annotated metadata: the JSON Schema of a type whose validators say more than
    pydantic can tell (made when a schema is asked for, not at import)."""

    make: Callable[[], dict[str, Any]]

    def __get_pydantic_json_schema__(self, core: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return self.make()


# Unicode White_Space, what pydantic's strip_whitespace removes (not U+001C..U+001F).
_WHITE_SPACE = [(0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680),
                (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
                (0x3000, 0x3000)]


def _ranges(points: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for cp in sorted(set(points)):
        if out and cp == out[-1][1] + 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


def _class(ranges: list[tuple[int, int]]) -> str:
    def esc(cp: int) -> str:
        return f"\\u{cp:04X}" if cp <= 0xFFFF else f"\\U{cp:08X}"
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


@cache
def _trimmed_text_pattern(max_length: int) -> str:
    """Strings that are 1 to `max_length` characters after trimming White_Space, none of them
    a control or format character. (Surrogates need no mention: a JSON text with a lone one
    is not JSON to the API, a 400.)"""
    space = [cp for a, b in _WHITE_SPACE for cp in range(a, b + 1)]
    bad = [cp for cp in range(0x110000)
           if unicodedata.category(chr(cp)) in _UNPRINTABLE - {"Cs"}]
    ws, no_bad = _class(_ranges(space)), _class(_ranges(bad))
    edge = _class(_ranges(space + bad))
    return f"^[{ws}]*[^{edge}](?:[^{no_bad}]{{0,{max_length - 2}}}[^{edge}])?[{ws}]*$"


_SPECIAL_USE = ("arpa", "invalid", "local", "localhost", "onion", "test")  # email-validator's


def _email_schema() -> dict[str, Any]:
    names = "|".join("".join(f"[{c}{c.upper()}]" for c in name) for name in _SPECIAL_USE)
    return {"type": "string", "format": "email", "maxLength": 254,
            "pattern": f"^(?!.*[.@](?:{names})\\s*$)",
            "description": "stored trimmed and lower-cased; unique. Checked by email-validator "
                           "(syntax, no DNS): special-use domains (.test, .local, .invalid, "
                           ".localhost, .onion, .arpa) are refused."}


def _name_schema() -> dict[str, Any]:
    return {"type": "string", "pattern": _trimmed_text_pattern(200),
            "description": "1 to 200 characters after trimming white space; no control or "
                           "format characters"}


UserId = Annotated[int, Field(ge=1, le=MAX_USER_ID, description="a user id")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                 AfterValidator(_printable), Documented(_name_schema)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=254),
                  AfterValidator(_email), Documented(_email_schema)]
Cursor = Annotated[str, AfterValidator(_cursor), Documented(lambda: {
    "type": "string", "pattern": f"^[0-9]{{1,{MAX_CURSOR_DIGITS}}}$"})]


# --- params -----------------------------------------------------------------------------------


class CreateUser(Params):
    name: Name
    email: Email


class UserRef(Params):
    id: UserId


class ListUsers(Params):
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE
    cursor: Cursor | None = Field(
        None, description="next_cursor of the previous page")


class UpdateUser(Params):
    # The check below, in JSON Schema: name or email, not null.
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": ["name"], "properties": {"name": {"type": "string"}}},
        {"required": ["email"], "properties": {"email": {"type": "string"}}}]})

    id: UserId
    name: Name | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> UpdateUser:
        if self.name is None and self.email is None:
            raise FieldProblem("name", "give name or email to change")
        return self


class RunJob(Params):
    duration_ms: Annotated[int, Field(ge=0, le=600_000)]
    steps: Annotated[int, Field(ge=1, le=1000)] = 10
    fail: bool = Field(False, description="end in Fail with code job_failed")


# --- results ----------------------------------------------------------------------------------


class User(Result):
    id: UserId
    name: str
    email: str


class UserPage(Result):
    items: list[User]
    next_cursor: str | None = None


class JobDone(Result):
    duration_ms: int
    steps: int


# --- handlers ---------------------------------------------------------------------------------


async def create_user(ctx: ActionContext, p: CreateUser) -> Outcome:
    """Create a user from `{name, email}`; 201 with the user and its Location."""
    user = await ctx.users.create(p.name, p.email, request_id=ctx.request_id)
    return Outcome(f"user created (ID: {user.id})", user.to_dict())


async def get_user(ctx: ActionContext, p: UserRef) -> Outcome:
    """One user by its integer id."""
    user = await ctx.users.get(p.id)
    return Outcome(f"user found (ID: {user.id})", user.to_dict())


async def delete_user(ctx: ActionContext, p: UserRef) -> Outcome:
    """Delete a user; 204."""
    await ctx.users.delete(p.id)
    return Outcome(f"user deleted (ID: {p.id})", None)


async def list_users(ctx: ActionContext, p: ListUsers) -> Outcome:
    """List users in id order: `?limit=1..100&cursor=<next_cursor>`."""
    after = None if p.cursor is None else int(p.cursor)
    users, next_after = await ctx.users.list(limit=p.limit, after=after)
    result: dict[str, Any] = {
        "items": [u.to_dict() for u in users],
        "next_cursor": None if next_after is None else str(next_after),
    }
    return Outcome(f"{len(users)} users", result)


async def update_user(ctx: ActionContext, p: UpdateUser) -> Outcome:
    """Change a user's name and/or email."""
    user = await ctx.users.update(p.id, name=p.name, email=p.email)
    return Outcome(f"user updated (ID: {user.id})", user.to_dict())


async def run_job(ctx: ActionContext, p: RunJob) -> Outcome:
    """A demo long job: `{duration_ms, steps?, fail?}`, reporting progress after each step."""
    pause = p.duration_ms / 1000 / p.steps
    for step in range(1, p.steps + 1):
        if pause:
            await asyncio.sleep(pause)
        await ctx.report_progress(100 * step // p.steps, f"step {step} of {p.steps}")
    if p.fail:
        raise JobFailed(f"job failed after {p.steps} steps, as asked")
    return Outcome(f"job done in {p.steps} steps",
                   {"duration_ms": p.duration_ms, "steps": p.steps})


USERS_WRITE = ("users:write",)

BUILTIN: tuple[Action, ...] = (
    Action("createUser", CreateUser, create_user, User,
           Route("POST", "/users", 201, location="/users/{id}"), roles=USERS_WRITE),
    Action("getUser", UserRef, get_user, User, Route("GET", "/users/<id>")),
    Action("listUsers", ListUsers, list_users, UserPage, Route("GET", "/users")),
    Action("updateUser", UpdateUser, update_user, User, Route("PUT", "/users/<id>"),
           roles=USERS_WRITE),
    Action("deleteUser", UserRef, delete_user, NoResult, Route("DELETE", "/users/<id>", 204),
           roles=USERS_WRITE),
    Action("runJob", RunJob, run_job, JobDone, Route("POST", "/jobs")),
)
