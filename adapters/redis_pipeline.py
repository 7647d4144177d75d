"""Auto-pipelining: the result store's commands issued in one turn of the event loop go to Redis
together, in one pipelined round trip (one pooled connection, one write, one read of all the
replies), instead of one round trip (and one pool checkout) each.

Nothing changes for a caller: each command is still one command (a script stays atomic on its
own; a pipeline is not a transaction), its reply or its error comes back to the caller that
issued it, and a failure of the round trip fails every command of it (StoreUnavailable at the
adapter's edge, as before). Under load the concurrent deliveries of a worker, and the concurrent
requests of an API process, share round trips; a command issued while no other is under way
is sent at once, on its own, as before.

A script is sent as EVALSHA; a NOSCRIPT reply (the server's script cache was flushed) runs that
one call again through redis-py's Script, which loads it (NOSCRIPT means it did not run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

MAX_BATCH = 512  # commands in one round trip at most


class AutoPipeline:
    def __init__(self, client: Redis) -> None:
        self._client = client
        self._pending: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        self._busy = 0  # commands sent and not answered yet

    def call(self, *args: Any, **options: Any) -> Awaitable[Any]:
        """One command (as `Redis.execute_command` takes it); its reply. Sent at once while
        no other command is under way (one request at a time pays nothing for batching),
        else queued for the next round trip."""
        if not self._busy and not self._pending:
            self._busy += 1  # now, not when the coroutine starts: the next call may batch
            return self._direct(args, options)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((args, options, future))
        if len(self._pending) >= MAX_BATCH:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    async def _direct(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        try:
            return await self._client.execute_command(*args, **options)  # type: ignore[no-untyped-call]
        finally:
            self._busy -= 1

    async def script(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """Run a registered script: EVALSHA in the pipeline, through Script on NOSCRIPT."""
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await script(keys=keys, args=args)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[tuple[Any, ...], dict[str, Any],
                                            asyncio.Future[Any]]]) -> None:
        self._busy += len(batch)
        try:
            pipe = self._client.pipeline(transaction=False)
            for args, options, _ in batch:
                pipe.execute_command(*args, **options)
            replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception)
                                         else ConnectionError(f"pipeline ended: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._busy -= len(batch)
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def close(self) -> None:
        """Let the round trips under way end (bounded by the socket timeout)."""
        if self._pending:
            self._flush()
        if self._sending:
            await asyncio.wait(set(self._sending))
