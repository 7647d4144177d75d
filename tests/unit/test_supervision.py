"""The one retry helper: loops that outlive any error, and stops that do not trust one cancel."""

from __future__ import annotations

import asyncio

from reference.backoff import Backoff, keep_running, stop_task


async def test_a_loop_outlives_a_cancelled_error_that_a_library_raised() -> None:
    """A step that raises a CancelledError instance of its own (aiormq closes a connection
    with one) is an error like any other: the loop goes on; a real cancel still stops it."""
    calls = 0
    went_on = asyncio.Event()

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError()  # not a request to stop this task
        went_on.set()
        await asyncio.sleep(3600)

    task = asyncio.get_running_loop().create_task(
        keep_running(step, name="test loop", backoff=Backoff(0.01, 0.01)))
    async with asyncio.timeout(5):
        await went_on.wait()
    assert calls == 2 and not task.done()
    assert await stop_task(task, timeout_s=5)
    assert task.cancelled()


async def test_a_loop_outlives_any_exception_and_backs_off() -> None:
    """Errors of any type are logged and followed by a pause; a success resets the backoff."""
    errors = [KeyError("k"), RuntimeError("closed transport"), ValueError("v")]
    done = asyncio.Event()

    async def step() -> None:
        if errors:
            raise errors.pop(0)
        done.set()
        await asyncio.sleep(3600)

    backoff = Backoff(0.01, 0.04)
    task = asyncio.get_running_loop().create_task(keep_running(step, name="t", backoff=backoff))
    async with asyncio.timeout(5):
        await done.wait()
    assert backoff.peek() == 0.04  # three failures: 0.01, 0.02, 0.04 (capped)
    assert await stop_task(task)
