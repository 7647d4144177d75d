"""Auto-pipelining of the result store's commands: one round trip for the commands of one
loop turn, each reply (or error) back to its own caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from reference.adapters.redis_errors import redis_call
from reference.adapters.redis_pipeline import AutoPipeline
from reference.errors import StoreUnavailable
from reference.fakes.faults import StoreFaults
from reference.fakes.redis_server import fake_redis_client


class _Counted(Redis):
    """A client that counts the pipelines it makes: each is one round trip."""

    pipelines = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.pipelines += 1
        return super().pipeline(*args, **kwargs)


@pytest_asyncio.fixture
async def client() -> AsyncIterator[_Counted]:
    made = fake_redis_client(fakeredis.FakeServer(), StoreFaults(), max_connections=8,
                             socket_timeout_s=2.0, pool_timeout_s=2.0)
    counted = _Counted(connection_pool=made.connection_pool)
    yield counted
    await counted.aclose(close_connection_pool=True)


async def test_a_lone_command_goes_out_at_once_without_a_pipeline(client: _Counted) -> None:
    """One command while nothing else is under way is sent on its own (no batching delay)."""
    pipe = AutoPipeline(client)
    assert await pipe.call("SET", "k", "v") is True
    assert await pipe.call("GET", "k") == b"v"
    assert client.pipelines == 0
    await pipe.close()


async def test_concurrent_commands_share_one_round_trip(client: _Counted) -> None:
    """While one command is under way, the 50 issued in the same loop turn go out in one
    pipeline, and each caller gets its own reply."""
    pipe = AutoPipeline(client)
    replies = await asyncio.gather(*(pipe.call("SET", f"k{n}", str(n)) for n in range(51)))
    assert replies == [True] * 51
    values = await asyncio.gather(*(pipe.call("GET", f"k{n}") for n in range(51)))
    assert values == [str(n).encode() for n in range(51)]
    assert client.pipelines == 2  # the first of each gather went alone, the other 50 together
    await pipe.close()


async def test_an_error_reply_fails_only_its_own_command(client: _Counted) -> None:
    """A command that Redis answers with an error fails its caller; the others of its round
    trip succeed."""
    pipe = AutoPipeline(client)
    await pipe.call("LPUSH", "a-list", "x")
    results = await asyncio.gather(pipe.call("SET", "first", "1"), pipe.call("GET", "a-list"),
                                   pipe.call("SET", "after", "2"), return_exceptions=True)
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
    await pipe.close()


async def test_a_flushed_script_cache_runs_the_script_anyway(client: _Counted) -> None:
    """EVALSHA after SCRIPT FLUSH (NOSCRIPT) loads and runs the script, once."""
    pipe = AutoPipeline(client)
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    assert await pipe.script(script, ["n"], []) == 1
    await client.script_flush()
    got = await asyncio.gather(pipe.call("GET", "n"), pipe.script(script, ["n"], []))
    assert got == [b"1", 2]
    await pipe.close()


async def test_a_lost_round_trip_fails_every_command_of_it(client: _Counted) -> None:
    """A connection that fails under a batch fails each of its commands, as StoreUnavailable
    at the adapter's edge, and the next commands go through."""
    faults = client.connection_pool.connection_kwargs["faults"][-1]
    pipe = AutoPipeline(client)
    first = asyncio.ensure_future(pipe.call("SET", "x", "1"))  # under way: the rest batch
    faults.reset_peer.on()
    batch = [redis_call("SET", pipe.call("SET", f"b{n}", "1")) for n in range(5)]
    results = await asyncio.gather(*batch, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    faults.reset_peer.off()
    await asyncio.gather(first, return_exceptions=True)
    assert await pipe.call("SET", "later", "1") is True
    await pipe.close()
