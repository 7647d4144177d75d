"""Translate redis-py's failures into the project's own at the adapter edge.

A failure is mapped by the operation that failed, not by a list of exception types: whatever a
Redis call raises (redis-py's ConnectionError or TimeoutError, a READONLY or OOM reply, uvloop's
RuntimeError on a closed transport, an OSError from the socket) means that the store did not do
what was asked, and becomes StoreUnavailable. Only the driver call is wrapped, so that a bug in
our own code around it still shows as what it is. Cancellation passes through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from reference.errors import StoreUnavailable

T = TypeVar("T")


def unavailable(what: str, exc: BaseException) -> StoreUnavailable:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return StoreUnavailable(f"redis {what} failed: {type(exc).__name__}: {text}"[:300])


async def redis_call(what: str, call: Awaitable[T]) -> T:
    """Await one driver call; any failure of it is StoreUnavailable."""
    try:
        return await call
    except Exception as exc:
        raise unavailable(what, exc) from exc
