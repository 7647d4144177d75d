"""Every 401 case of contract §8, on every protected route, and the open routes without a token."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from reference.fakes.pipeline import Pipeline
from tests.api.conftest import SECRET

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROTECTED = [
    ("POST", "/users"), ("GET", "/users"), ("GET", "/users/1"), ("PUT", "/users/1"),
    ("DELETE", "/users/1"), ("POST", "/jobs"), ("GET", "/requests/abc"),
]


def _tok(claims: dict[str, object], key: str | None = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


NOW = int(time.time())
BAD_TOKENS = {
    "expired": _tok({"sub": "a", "exp": NOW - 60}),
    "not_yet_valid": _tok({"sub": "a", "exp": NOW + 600, "nbf": NOW + 300}),
    "wrong_signature": _tok({"sub": "a", "exp": NOW + 600}, "wrong-secret-" + "y" * 24),
    "alg_none": _tok({"sub": "a", "exp": NOW + 600}, None, "none"),
    "no_sub": _tok({"exp": NOW + 600}),
    "no_exp": _tok({"sub": "a"}),
    "garbage": "not.a.jwt",
}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_no_credentials_gets_a_bare_challenge(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    """Without Authorization: 401 and a Bearer challenge with no error attribute (RFC 6750)."""
    r = await http.request(method, path, json={})
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and "error=" not in challenge
    assert r.headers["x-request-id"]


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_bad_tokens_get_invalid_token(
    http: httpx.AsyncClient, method: str, path: str, kind: str
) -> None:
    """Each bad token: 401 with error="invalid_token"."""
    r = await http.request(method, path, json={},
                           headers={"Authorization": f"Bearer {BAD_TOKENS[kind]}"})
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert r.json()["error"]["code"] == "unauthorized"


async def test_malformed_authorization_header(http: httpx.AsyncClient) -> None:
    """A header that is not `Bearer <token>` is an invalid token, not a missing one."""
    r = await http.get("/users", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
async def test_open_routes_need_no_token(http: httpx.AsyncClient, path: str) -> None:
    """Health, readiness, metrics and docs answer 200 without a token."""
    r = await http.get(path, follow_redirects=True)
    assert r.status_code == 200


async def test_openapi_lists_the_routes(http: httpx.AsyncClient) -> None:
    """The OpenAPI document describes the API's paths."""
    doc = (await http.get("/openapi.json")).json()
    paths = doc["paths"]
    assert {"/users", "/users/{id}", "/jobs", "/requests/{request_id}"} <= set(paths)
    body = paths["/users"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    create = doc["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert create["required"] == ["name", "email"] and create["additionalProperties"] is False
    limit = next(p for p in paths["/users"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["in"], limit["schema"]["maximum"]) == ("query", 100)


async def test_auth_is_checked_before_the_body(pipe: Pipeline, http: httpx.AsyncClient) -> None:
    """A bad body from an unauthenticated client is still a 401, not a 400."""
    r = await http.post("/users", content=b"{not json")
    assert r.status_code == 401
