"""Bad input: 400, 413 and 422 as contract §8 says, answered before anything is published."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from reference.fakes.pipeline import Pipeline, running_pipeline
from tests.api.conftest import api_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def idle() -> AsyncIterator[Pipeline]:
    """A pipeline with no worker: anything published would stay visible in the queue."""
    async with running_pipeline(api_settings(queue="bad-input", max_body_bytes=1024),
                                workers=0) as p:
        yield p


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(idle: Pipeline) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=idle.base_url, headers=idle.auth(), timeout=5) as c:
        yield c


def published(p: Pipeline) -> int:
    return len(p.memory.broker.queues[p.settings.queue].ready)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/users", b"{oops"), ("PUT", "/users/1", b"name=x"), ("POST", "/jobs", b"")],
)
async def test_body_not_json_is_400(
    idle: Pipeline, client: httpx.AsyncClient, method: str, path: str, body: bytes
) -> None:
    """A body that is not JSON is a 400, and nothing is published."""
    r = await client.request(method, path, content=body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request"
    assert published(idle) == 0


async def test_body_over_the_limit_is_413(idle: Pipeline, client: httpx.AsyncClient) -> None:
    """A body over REFERENCE_MAX_BODY_BYTES is a 413."""
    r = await client.post("/users", json={"name": "x" * 2000, "email": "a@example.com"})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_large"
    assert published(idle) == 0


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/users", [1, 2], "body"),
        ("POST", "/users", {"email": "a@example.com"}, "name"),
        ("POST", "/users", {"name": "A"}, "email"),
        ("POST", "/users", {"name": 5, "email": "a@example.com"}, "name"),
        ("POST", "/users", {"name": " ", "email": "a@example.com"}, "name"),
        ("POST", "/users", {"name": "A", "email": "not-an-email"}, "email"),
        ("POST", "/users", {"name": "A", "email": "a@example.com", "admin": True}, "admin"),
        ("PUT", "/users/1", {}, "name"),
        ("PUT", "/users/1", {"id": 2, "name": "B"}, "id"),
        ("PUT", "/users/x", {"name": "B"}, "id"),
        ("GET", "/users/abc", None, "id"),
        ("GET", "/users/-1", None, "id"),
        ("DELETE", "/users/1.5", None, "id"),
        ("GET", "/users?limit=0", None, "limit"),
        ("GET", "/users?limit=1000", None, "limit"),
        ("GET", "/users?limit=ten", None, "limit"),
        ("GET", "/users?cursor=zz", None, "cursor"),
        ("POST", "/jobs", {}, "duration_ms"),
        ("POST", "/jobs", {"duration_ms": 600001}, "duration_ms"),
        ("POST", "/jobs", {"duration_ms": -1}, "duration_ms"),
        ("POST", "/jobs", {"duration_ms": 1.5}, "duration_ms"),
        ("POST", "/jobs", {"duration_ms": 10, "steps": 0}, "steps"),
        ("POST", "/jobs", {"duration_ms": 10, "steps": 1001}, "steps"),
        ("POST", "/jobs", {"duration_ms": 10, "fail": "yes"}, "fail"),
        ("POST", "/jobs", {"duration_ms": True}, "duration_ms"),
    ],
)
async def test_wrong_fields_are_422_naming_the_field(
    idle: Pipeline, client: httpx.AsyncClient, method: str, path: str, body: Any, field: str
) -> None:
    """Wrong fields or types: 422 whose error names the field, and nothing is published."""
    r = await client.request(method, path, json=body) if body is not None else (
        await client.request(method, path))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert (error["code"], error["field"]) == ("validation", field)
    assert field in error["message"] or field == "body"
    assert published(idle) == 0


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    """An unknown path answers 404 in the same JSON error shape."""
    r = await client.get("/nowhere")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
