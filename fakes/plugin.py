"""The pytest plugin (entry point `pytest11`: reference): the whole pipeline as a fixture.

    async def test_create(reference_pipeline):
        pipe = reference_pipeline
        r = await pipe.client.post("/users", json={"name": "Ada", "email": "ada@example.com"},
                                   headers=pipe.auth("ada", roles=["users:write"]))
        assert r.status_code == 201

Fixtures:
- `reference_pipeline`: API server, one core worker, broker and store, in the test's event
  loop; `.base_url`, `.client`, `.auth(sub, roles=())`, `.broker`, `.store`, `.faults`,
  `.add_worker()`. It registers the actions of the `reference_actions` fixture (override it).
- `reference_pipeline_factory`: `await factory(settings=None, *, workers=1, actions=())` for
  other settings or more workers; everything it made stops after the test.
- `reference_settings`: the Settings the fixtures start from (override it).

`--reference-real` (or REFERENCE_REAL=1) runs the same tests on RabbitMQ and Redis at
REFERENCE_TEST_AMQP_URL / REFERENCE_TEST_REDIS_URL (defaults: 127.0.0.1, Redis database 9),
each pipeline on its own queue and key prefix, removed afterwards. There `.faults` is None,
and a test that needs it skips by calling `reference_faults(pipe)`.

Async fixtures: needs pytest-asyncio (`pip install 'reference[pytest]'`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import pytest

from reference.actions import Action
from reference.fakes.pipeline import Pipeline, running_pipeline
from reference.settings import Settings

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the fixtures say what to install when used
    pytest_asyncio = None  # type: ignore[assignment]

REAL_ENV = "REFERENCE_REAL"
AMQP_URL_ENV = "REFERENCE_TEST_AMQP_URL"
REDIS_URL_ENV = "REFERENCE_TEST_REDIS_URL"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"
PipelineFactory = Callable[..., Awaitable[Pipeline]]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reference", "reference request/reply pipeline")
    group.addoption("--reference-real", action="store_true", default=False,
                    help="run reference_pipeline on real RabbitMQ and Redis "
                         f"({AMQP_URL_ENV}, {REDIS_URL_ENV}; env {REAL_ENV}=1)")


def real_brokers_wanted(config: pytest.Config) -> bool:
    flag = bool(config.getoption("--reference-real", default=False))
    return flag or os.environ.get(REAL_ENV, "").lower() in {"1", "true", "yes"}


def reference_faults(pipe: Pipeline) -> Any:
    """The pipeline's fault switches; skips the test on real brokers, which have none."""
    if pipe.faults is None:
        pytest.skip("fault injection needs the in-memory broker and store")
    return pipe.faults


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1",
                                       parts.port or default_port), timeout=1.0):
            return True
    except OSError:
        return False


def _real_urls() -> tuple[str, str]:
    amqp = os.environ.get(AMQP_URL_ENV, DEFAULT_AMQP_URL)
    redis = os.environ.get(REDIS_URL_ENV, DEFAULT_REDIS_URL)
    for url, port in ((amqp, 5672), (redis, 6379)):
        if not _reachable(url, port):
            message = f"--reference-real: no server at {url}"
            if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
                pytest.fail(message, pytrace=False)
            pytest.skip(message)
    return amqp, redis


async def _remove_real_leftovers(settings: Settings) -> None:
    """Delete the queue, its dead-letter queue and the keys of one real-broker pipeline."""
    import aiormq
    import redis.asyncio as aioredis

    with contextlib.suppress(Exception):
        conn = await aiormq.connect(settings.broker_url)
        channel = await conn.channel()
        for name in (settings.queue, settings.queue + ".dlq"):
            await channel.queue_delete(name)
        await conn.close()
    client = aioredis.from_url(settings.store_url)
    try:
        keys = [k async for k in client.scan_iter(match=settings.key_prefix + "*", count=1000)]
        if keys:
            await client.unlink(*keys)
    finally:
        await client.aclose()


def _need_pytest_asyncio() -> None:
    if pytest_asyncio is None:
        raise pytest.UsageError("the reference fixtures are async: pip install pytest-asyncio "
                                "(or 'reference[pytest]')")


F = TypeVar("F", bound=Callable[..., Any])


def _fixture(func: F) -> F:
    """An async fixture under pytest-asyncio (whatever its mode), if it is installed."""
    if pytest_asyncio is None:
        return cast(F, pytest.fixture(func))
    return cast(F, pytest_asyncio.fixture(func))


@pytest.fixture
def reference_settings() -> Settings:
    """The settings the pipeline fixtures start from: in memory, a fresh signing secret."""
    return Settings(jwt_secret=secrets.token_hex(32), request_timeout_s=10.0)


@pytest.fixture
def reference_actions() -> Sequence[Action]:
    """Actions `reference_pipeline` registers besides the built-in ones: override it."""
    return ()


@_fixture
async def reference_pipeline_factory(
    request: pytest.FixtureRequest, reference_settings: Settings,
) -> AsyncIterator[PipelineFactory]:
    """`await factory(settings=None, *, workers=1, actions=())`: a running pipeline."""
    _need_pytest_asyncio()
    real = real_brokers_wanted(request.config)
    urls = _real_urls() if real else None
    made: list[Settings] = []
    async with contextlib.AsyncExitStack() as stack:

        async def make(settings: Settings | None = None, *, workers: int = 1,
                       actions: Sequence[Action] = ()) -> Pipeline:
            settings = settings or reference_settings
            if urls is not None:
                tag = uuid.uuid4().hex[:12]
                settings = settings.replace(broker_url=urls[0], store_url=urls[1],
                                            queue=f"pytest_{tag}",
                                            key_prefix=f"pytest:{tag}:")
                made.append(settings)
            return await stack.enter_async_context(
                running_pipeline(settings, workers=workers, actions=tuple(actions)))

        try:
            yield make
        finally:
            await stack.aclose()
            for settings in made:
                await _remove_real_leftovers(settings)


@_fixture
async def reference_pipeline(
    reference_pipeline_factory: PipelineFactory, reference_actions: Sequence[Action],
) -> Pipeline:
    """The whole pipeline, running: API, one core worker, broker and store."""
    return await reference_pipeline_factory(actions=reference_actions)
