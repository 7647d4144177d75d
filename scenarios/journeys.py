"""User journeys, written once (see scenarios.steps for how they run)."""

from __future__ import annotations

import random
from collections.abc import Callable

from reference.scenarios.steps import Call, Context, Journey, Reply, ScenarioFailure

OK = frozenset({200})


def user_lifecycle(ctx: Context) -> Journey:
    """Create, read, update, list and delete one user."""
    auth = ctx.auth()
    email = f"{ctx.unique()}@load.example"
    created: Reply = yield Call("POST", "/users", "create user",
                                json={"name": "Load", "email": email},
                                headers=auth, expect=frozenset({201}))
    uid = created.body["id"]
    got = yield Call("GET", f"/users/{uid}", "get user", headers=auth)
    if got.body != created.body:
        raise ScenarioFailure(f"read {got.body} after creating {created.body}")
    updated = yield Call("PUT", f"/users/{uid}", "update user", json={"name": "Renamed"},
                         headers=auth)
    if updated.body["name"] != "Renamed":
        raise ScenarioFailure(f"update not applied: {updated.body}")
    yield Call("GET", "/users?limit=10", "list users", headers=auth)
    yield Call("DELETE", f"/users/{uid}", "delete user", headers=auth, expect=frozenset({204}))
    yield Call("GET", f"/users/{uid}", "get deleted user", headers=auth,
               expect=frozenset({404}))


def read_heavy(ctx: Context, reads: int = 8) -> Journey:
    """One write, then many reads of users and pages."""
    auth = ctx.auth()
    created = yield Call("POST", "/users", "create user",
                         json={"name": "Reader", "email": f"{ctx.unique()}@load.example"},
                         headers=auth, expect=frozenset({201}))
    uid = created.body["id"]
    for _ in range(reads):
        if random.random() < 0.75:
            yield Call("GET", f"/users/{uid}", "get user", headers=auth)
        else:
            yield Call("GET", "/users?limit=20", "list users", headers=auth)


def _poll_until_final(ctx: Context, location: str, name: str, *,
                      interval_s: float, limit: int) -> Journey:
    """Read a request's record until it is final; checks that progress never goes back."""
    last_progress = -1
    for _ in range(limit):
        reply = yield Call("GET", location, name, headers=ctx.auth(), pause_s=interval_s)
        record = reply.body
        progress = record.get("progress")
        if progress is not None:
            if progress < last_progress:
                raise ScenarioFailure(f"progress went back from {last_progress} to {progress}")
            last_progress = progress
        if record["status"] in {"Success", "Fail"}:
            if record["status"] != "Success":
                raise ScenarioFailure(f"job ended in {record}")
            return
    raise ScenarioFailure(f"{location} not final after {limit} reads")


def long_job(ctx: Context, steps: int = 10) -> Journey:
    """Start a job with Prefer: respond-async and follow its progress to Success."""
    duration_ms = ctx.job_ms
    accepted = yield Call("POST", "/jobs", "start job (async)",
                          json={"duration_ms": duration_ms, "steps": steps},
                          headers={**ctx.auth(), "Prefer": "respond-async"},
                          expect=frozenset({202}))
    yield from _poll_until_final(ctx, accepted.headers["location"], "job progress",
                                 interval_s=duration_ms / 1000 / steps,
                                 limit=steps * 20 + 50)


def slow_job_times_out(ctx: Context) -> Journey:
    """A job longer than the request timeout: 504 with Location, then read later."""
    duration_ms = min(600_000, int(ctx.request_timeout_s * 1000) + 300)
    timed_out = yield Call("POST", "/jobs", "slow job (504)",
                           json={"duration_ms": duration_ms, "steps": 2},
                           headers=ctx.auth(), expect=frozenset({504}))
    location = timed_out.headers["location"]
    if location != f"/requests/{timed_out.body['request_id']}":
        raise ScenarioFailure(f"504 without its Location: {timed_out.headers}")
    yield from _poll_until_final(ctx, location, "slow job result", interval_s=0.1,
                                 limit=int(duration_ms / 100) + 100)


def bad_requests(ctx: Context) -> Journey:
    """Bad tokens and bad bodies, each with the status docs/contract.md §8 gives it."""
    good = ctx.auth()
    yield Call("POST", "/users", "no token", json={}, expect=frozenset({401}))
    yield Call("GET", "/users/1", "bad token", headers={"Authorization": "Bearer not.a.token"},
               expect=frozenset({401}))
    yield Call("POST", "/users", "body not JSON", content=b"{nope", headers=good,
               expect=frozenset({400}))
    yield Call("POST", "/users", "missing field", json={"name": "X"}, headers=good,
               expect=frozenset({422}))
    yield Call("POST", "/jobs", "bad type", json={"duration_ms": "soon"}, headers=good,
               expect=frozenset({422}))
    yield Call("GET", "/users/abc", "bad id", headers=good, expect=frozenset({422}))


SCENARIOS: dict[str, Callable[[Context], Journey]] = {
    "lifecycle": user_lifecycle,
    "read_heavy": read_heavy,
    "long_job": long_job,
    "slow_job": slow_job_times_out,
    "bad_requests": bad_requests,
}
