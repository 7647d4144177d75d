"""Micro-benchmarks of the hot paths (pytest-benchmark; run by `tox -e bench`, not by default).

Figures, not pass/fail: compare runs with `--benchmark-compare`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import fakeredis
import jwt
import pytest

from reference.adapters.redis_results import RedisResultStore
from reference.auth import JwtKeys, JwtVerifier
from reference.messages import Principal, RequestMessage, decode, encode
from reference.records import RUNNING, SUCCESS, ResultRecord
from reference.settings import Settings

MESSAGE = RequestMessage("createUser", {"name": "Hong Gildong", "email": "hong@example.com"},
                         "123e4567-e89b-12d3-a456-426614174000", principal=Principal("alice"),
                         queued_at=1795629333123.456)
RECORD = ResultRecord(status=SUCCESS, detail="user created (ID: 42)",
                      result={"id": 42, "name": "Hong Gildong", "email": "hong@example.com"},
                      owner="alice", progress=100, queued_at=1795629333123.456,
                      started_at=1795629333124.5, updated_at=1795629333125.25,
                      finished_at=1795629333125.25)
SECRET = "bench-secret-" + "b" * 24


def test_message_encode(benchmark: pytest.FixtureRequest) -> None:
    """Encoding a request message to bytes."""
    assert benchmark(encode, MESSAGE).startswith(b'{"action":"createUser"')


def test_message_decode(benchmark: pytest.FixtureRequest) -> None:
    """Decoding and checking a request message body."""
    body = encode(MESSAGE)
    assert benchmark(decode, body) == MESSAGE


def test_record_to_json(benchmark: pytest.FixtureRequest) -> None:
    """Serialising a final record."""
    assert benchmark(RECORD.to_json).startswith(b'{"status":"Success"')


def test_record_parse(benchmark: pytest.FixtureRequest) -> None:
    """Parsing a stored final record."""
    raw = RECORD.to_json()
    assert benchmark(ResultRecord.from_json, raw) == RECORD


@pytest.fixture
def verifier() -> JwtVerifier:
    keys = JwtKeys.from_settings(Settings(jwt_secret=SECRET))
    return JwtVerifier(keys, audience=None, issuer=None)


def _token() -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, SECRET)


def test_jwt_verify_first_sight(benchmark: pytest.FixtureRequest, verifier: JwtVerifier) -> None:
    """Verifying a token the API has not seen: signature and claims (pyjwt)."""
    token = _token()
    assert benchmark(lambda: verifier._verify(token))[0].sub == "alice"


def test_jwt_verify_cached(benchmark: pytest.FixtureRequest, verifier: JwtVerifier) -> None:
    """Verifying a token seen before (the common case: one token, many requests)."""
    token = _token()
    verifier.verify(token)
    assert benchmark(verifier.verify, token).sub == "alice"


@pytest.fixture
def loop_and_store() -> Iterator[tuple[asyncio.AbstractEventLoop, RedisResultStore]]:
    loop = asyncio.new_event_loop()
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield loop, RedisResultStore(client)
    loop.run_until_complete(client.aclose())
    loop.close()


def test_store_begin_and_finish(benchmark: pytest.FixtureRequest,
                                loop_and_store: tuple[asyncio.AbstractEventLoop,
                                                      RedisResultStore]) -> None:
    """A worker's two store round trips per request (on fakeredis: the client-side cost)."""
    loop, store = loop_and_store
    running = ResultRecord(status=RUNNING, detail="running", owner="alice")
    ids = iter(range(10**9))

    def one() -> bool:
        rid = f"r{next(ids)}"
        loop.run_until_complete(store.begin(rid, "w", running, claim_ttl_s=10,
                                            running_ttl_s=60))
        return loop.run_until_complete(store.finish(rid, "w", RECORD, ttl_s=60))

    assert benchmark(one) is True
