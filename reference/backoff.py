"""Retry with backoff, written once: bounded retries, loops that outlive any error, and
task shutdown that does not trust a single cancellation.

Every background loop of the project (the RabbitMQ reconnect supervisor, the batch poller, the
push listener and its safety net, the worker's claim renewer) runs under `keep_running`: an
exception of any type is logged and followed by a pause, never the end of the loop. Only
cancellation ends it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

STOP_TASK_TIMEOUT_S = 5.0


class Backoff:
    """Pauses that double from `initial` up to `maximum`; `reset()` after a success."""

    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        pause = self._next
        self._next = min(self._next * 2, self.maximum)
        return pause

    def peek(self) -> float:
        return self._next

    def reset(self) -> None:
        self._next = self.initial


async def keep_running(step: Callable[[], Awaitable[object]], *, name: str,
                       backoff: Backoff | None = None,
                       on_error: Callable[[BaseException], Awaitable[None]] | None = None,
                       ) -> None:
    """Call `step` for ever. A step that returns resets the backoff; a step that raises
    anything but cancellation is logged, `on_error` runs (its own errors are logged too), and
    the loop pauses for the next backoff before it goes on."""
    backoff = backoff or Backoff()
    while True:
        try:
            await step()
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this loop is being stopped
            # A library raised a CancelledError of its own (aiormq closes a connection with
            # one): an error like any other, not a request to stop.
            await _pause_after(name, exc, backoff, on_error)
        except Exception as exc:
            await _pause_after(name, exc, backoff, on_error)
        else:
            backoff.reset()


async def _pause_after(name: str, exc: BaseException, backoff: Backoff,
                       on_error: Callable[[BaseException], Awaitable[None]] | None) -> None:
    log.warning("%s: %s: %s; going on after %.2f s", name, type(exc).__name__, exc,
                backoff.peek(), exc_info=log.isEnabledFor(logging.DEBUG))
    if on_error is not None:
        try:
            await on_error(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: error while recovering", name)
    await asyncio.sleep(backoff.next())


async def retry_until(op: Callable[[], Awaitable[T]], *, deadline_s: float,
                      retry_on: tuple[type[BaseException], ...],
                      backoff: Backoff | None = None, what: str = "operation") -> T:
    """`op()`'s result, retrying the errors in `retry_on` with backoff until `deadline_s`
    seconds have passed; then the last error is raised."""
    backoff = backoff or Backoff(maximum=2.0)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        try:
            return await op()
        except retry_on as exc:
            pause = backoff.next()
            if loop.time() + pause > deadline:
                raise
            log.warning("waiting for %s: %s", what, exc)
            await asyncio.sleep(pause)


async def stop_task(task: asyncio.Task[object] | None, *,
                    timeout_s: float = STOP_TASK_TIMEOUT_S) -> bool:
    """Cancel `task` and wait for it to end, cancelling again if a library swallowed the
    cancellation; give up after `timeout_s`. True if the task has ended."""
    if task is None or task.done():
        return True
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not task.done():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            log.error("task %s did not stop within %.1f s", task.get_name(), timeout_s)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(0.1, left))
    if not task.cancelled() and task.exception() is not None:
        log.warning("task %s ended with %r", task.get_name(), task.exception())
    return True
