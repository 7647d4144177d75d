"""The vocabulary of journeys: a Call to make, the Reply it got, and drivers that run a
journey over any HTTP client (async httpx in pytest, locust's session over HTTP).

A journey is a generator: it yields Calls and is sent back Replies, so the same definition
runs in-process, against real brokers, and under locust. Nothing here imports locust.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    name: str  # the entry under which load tests record it
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    expect: frozenset[int] = frozenset({200})
    pause_s: float = 0.0  # wait this long before sending (polling journeys)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: Any


Journey = Generator[Call, Reply, None]


class ScenarioFailure(AssertionError):
    """A reply that the journey did not expect."""


@dataclass
class Context:
    """What a journey needs from its runner."""

    token: Callable[[str], str]  # sub -> signed bearer token
    unique: Callable[[], str]  # a string unique within the run (for emails)
    request_timeout_s: float = 30.0
    sub: str = "load"
    job_ms: int = 1000  # length of the long_job journey's job

    def auth(self, sub: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub or self.sub)}"}


def check(call: Call, reply: Reply) -> None:
    if reply.status not in call.expect:
        raise ScenarioFailure(
            f"{call.method} {call.path} ({call.name}): got {reply.status}, "
            f"expected {sorted(call.expect)}: {str(reply.body)[:200]}")


async def run_async(journey: Journey, send: Callable[[Call], Awaitable[Reply]]) -> int:
    """Drive a journey with an async sender; returns the number of calls made."""
    calls = 0
    try:
        call = next(journey)
        while True:
            if call.pause_s:
                await asyncio.sleep(call.pause_s)
            reply = await send(call)
            calls += 1
            check(call, reply)
            call = journey.send(reply)
    except StopIteration:
        return calls


def run_sync(journey: Journey, send: Callable[[Call], Reply],
             sleep: Callable[[float], None] = time.sleep) -> int:
    """Drive a journey with a blocking sender (locust's, under gevent)."""
    calls = 0
    try:
        call = next(journey)
        while True:
            if call.pause_s:
                sleep(call.pause_s)
            reply = send(call)
            calls += 1
            check(call, reply)
            call = journey.send(reply)
    except StopIteration:
        return calls
