"""Bounded waiting for tests: nothing here assumes delivery is synchronous."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from reference.ports import ResultStore
from reference.records import ResultRecord

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 5.0, interval: float = 0.01
) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        await asyncio.sleep(interval)


async def final_record(store: ResultStore, request_id: str, timeout: float = 5.0) -> ResultRecord:
    async def probe() -> ResultRecord | None:
        record = await store.get(request_id)
        return record if record is not None and record.is_final else None

    return await eventually(probe, timeout=timeout)


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `host:port` now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
