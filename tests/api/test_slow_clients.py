"""Slow clients: headers or a body trickled byte by byte get 408 within the bound."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from reference.fakes.pipeline import Pipeline, running_pipeline
from tests.api.conftest import api_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")
BOUND_S = 1.0
SWEEP_S = BOUND_S / 4  # the protocol checks every quarter of the bound


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pipe() -> AsyncIterator[Pipeline]:
    async with running_pipeline(api_settings(queue="slow-clients",
                                             client_timeout_s=BOUND_S)) as p:
        yield p


async def _trickle(pipe: Pipeline, head: bytes, tail: bytes) -> tuple[bytes, float]:
    """Send `head` at once, then `tail` one byte every 0.2 s; return the answer and when it
    came."""
    host, port = pipe.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    writer.write(head)

    async def drip() -> None:
        for byte in tail:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.2)

    dripping = asyncio.create_task(drip())
    try:
        async with asyncio.timeout(BOUND_S + SWEEP_S + 3):
            answer = await reader.read(65536)
    finally:
        dripping.cancel()
        writer.close()
    return answer, time.monotonic() - started


async def test_trickled_headers_get_408(pipe: Pipeline) -> None:
    """Headers sent one byte at a time get 408 with the envelope once the bound has passed."""
    answer, took = await _trickle(pipe, b"GET /healthz HTTP/1.1\r\n",
                                  b"X-Slow: " + b"a" * 200 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b'"code":"timeout"' in answer
    assert BOUND_S <= took <= BOUND_S + SWEEP_S + 1


async def test_a_trickled_body_gets_408(pipe: Pipeline) -> None:
    """A body sent one byte at a time gets 408, not a 503 a minute later."""
    token = pipe.token()
    head = (b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 200\r\n\r\n")
    answer, took = await _trickle(pipe, head, b"{" + b" " * 199)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert BOUND_S <= took <= BOUND_S + SWEEP_S + 1


async def test_waiting_for_the_result_does_not_count(pipe: Pipeline) -> None:
    """A request received at once whose job outlasts the bound is answered 200: only
    receiving is bounded."""
    token = pipe.token()
    body = b'{"duration_ms": 2500, "steps": 2}'
    head = (b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)
    host, port = pipe.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    async with asyncio.timeout(10):
        answer = await reader.read(65536)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
