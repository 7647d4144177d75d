"""The built-in actions: users CRUD and the long demo job, as ordinary registered actions."""

from __future__ import annotations

import asyncio
import unicodedata
from typing import Annotated, Any

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field, StringConstraints, model_validator

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


UserId = Annotated[int, Field(ge=1, le=MAX_USER_ID, description="a user id")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                 AfterValidator(_printable)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=254),
                  AfterValidator(_email)]


# --- params -----------------------------------------------------------------------------------


class CreateUser(Params):
    name: Name
    email: Email = Field(description="stored lower-cased; unique")


class UserRef(Params):
    id: UserId


class ListUsers(Params):
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE
    cursor: Annotated[str, AfterValidator(_cursor)] | None = Field(
        None, description="next_cursor of the previous page")


class UpdateUser(Params):
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
