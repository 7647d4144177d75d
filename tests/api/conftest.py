"""In-process HTTP tests: one running pipeline (API server + worker + fakes) per module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from reference.fakes.pipeline import Pipeline, running_pipeline
from reference.settings import Settings

SECRET = "test-secret-" + "x" * 24


def api_settings(**changes: object) -> Settings:
    return Settings(jwt_secret=SECRET, queue="api-tests", claim_ttl_s=0.5,
                    request_timeout_s=5.0, shutdown_timeout_s=1.0).replace(**changes)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pipe() -> AsyncIterator[Pipeline]:
    async with running_pipeline(api_settings(max_body_bytes=4096)) as p:
        yield p


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def http(pipe: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pipe.base_url, timeout=10) as client:
        yield client
