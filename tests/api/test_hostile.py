"""Hostile input: every answer is a 4xx with the envelope, never a 5xx, never the library's text."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference.fakes.pipeline import Pipeline, running_pipeline
from tests.api.conftest import api_settings


@pytest.fixture(scope="module")
def served() -> Iterator[Pipeline]:
    """A pipeline served from its own thread and loop, so that sync clients (and hypothesis)
    can hit it."""
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    box: list[Pipeline] = []

    async def main() -> None:
        async with running_pipeline(api_settings(queue="hostile", max_body_bytes=65536,
                                                 request_timeout_s=2.0)) as p:
            box.append(p)
            stop.append(asyncio.Event())
            ready.set()
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield box[0]
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(30)


@pytest.fixture(scope="module")
def client(served: Pipeline) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.base_url, timeout=10) as c:
        yield c


def _envelope(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code < 500, (r.status_code, r.text)
    body: dict[str, Any] = r.json()
    assert set(body["error"]) <= {"code", "message", "field"}, body
    return body["error"]


@pytest.mark.parametrize("header", [b"Bearer \xff", b"Bearer \xb7\xb7.\xb7.\xb7",
                                    b"Bearer a.b.c", b"Bearer \x1b[31m", b"\xff\xfe"])
def test_a_garbled_token_is_a_401_in_fixed_words(client: httpx.Client, header: bytes) -> None:
    """Tokens with non-UTF-8 bytes or garbage get 401 whose message is ours, not PyJWT's."""
    r = client.get("/users/1", headers={"Authorization": header})
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    message = _envelope(r)["message"]
    assert message in {"invalid token", "invalid token: not a JWT",
                       "Authorization must be 'Bearer <token>'"}, message


@pytest.mark.parametrize("query", ["limit=%C2%B2", "cursor=%C2%B2", "limit=" + "9" * 5000,
                                   "limit=-", "limit=1e3", "limit=%EF%BC%91"])
def test_odd_numbers_in_the_query_are_a_422(client: httpx.Client, served: Pipeline,
                                            query: str) -> None:
    """Unicode digits, 5,000-digit and non-numbers in the query are 422 naming the field."""
    r = client.get(f"/users?{query}", headers=served.auth())
    assert r.status_code == 422, r.text
    assert _envelope(r)["field"] in {"limit", "cursor"}


@pytest.mark.parametrize("path", ["/users/%C2%B2", "/users/" + "1" * 40, "/users/0x10",
                                  "/users/-1", "/users/1.0"])
def test_odd_ids_in_the_path_are_a_422(client: httpx.Client, served: Pipeline,
                                       path: str) -> None:
    """An id that is not a positive integer is 422 with field `id`."""
    r = client.get(path, headers=served.auth())
    assert r.status_code == 422 and _envelope(r)["field"] == "id"


def test_request_ids_of_another_form_are_never_read(client: httpx.Client,
                                                    served: Pipeline) -> None:
    """Any request id but a lower-case UUID is 404, whether or not a key of that name exists:
    the keys of other families are not read and do not tell which users exist."""
    created = client.post("/users", json={"name": "Eve", "email": "eve@example.com"},
                          headers=served.auth())
    assert created.status_code == 201
    answers = set()
    rid_made = created.headers["X-Request-ID"]
    for rid in ("{reference:users}:ids", "{reference:users}:u:1", "{reference:users}:u:999",
                rid_made.upper(), "final:{" + rid_made + "}", "{" + rid_made + "}", "%00",
                "x" * 300):
        r = client.get(f"/requests/{rid}", headers=served.auth())
        assert r.status_code == 404
        answers.add(r.text)
    assert len(answers) == 1
    own = client.get(f"/requests/{created.headers['X-Request-ID']}", headers=served.auth())
    assert own.status_code == 200


def test_made_up_methods_do_not_grow_the_metrics(client: httpx.Client) -> None:
    """Requests with invented HTTP methods are counted under one label, `other`."""
    for i in range(20):
        r = client.request(f"BREW{i}", "/users")
        assert r.status_code < 500
    text = client.get("/metrics").text
    assert "BREW" not in text
    methods = set(re.findall(r'method="([^"]+)"', text))
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}


def test_a_405_says_what_is_allowed(client: httpx.Client) -> None:
    """A method a route does not take is 405 with an Allow header and the envelope."""
    r = client.patch("/jobs")
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    assert _envelope(r)["code"] == "method_not_allowed"


@pytest.mark.parametrize("given", [b"\x1b[2J", b"\xff", b"a" * 7000, b"", b"with space"])
def test_a_bad_client_request_id_is_replaced(client: httpx.Client, given: bytes) -> None:
    """A client X-Request-ID that is not 1-128 visible ASCII characters is not echoed."""
    r = client.get("/healthz", headers={"X-Request-ID": given})
    echoed = r.headers["X-Request-ID"]
    assert echoed.encode() != given and re.fullmatch(r"[0-9a-f-]{36}", echoed)


def test_a_good_client_request_id_is_echoed(client: httpx.Client) -> None:
    """A client X-Request-ID of visible ASCII is echoed, for tracing across services."""
    r = client.get("/healthz", headers={"X-Request-ID": "trace-42/abc"})
    assert r.headers["X-Request-ID"] == "trace-42/abc"


def _header_safe(value: bytes) -> bytes:
    """Bytes an HTTP client can send in a header value: no control bytes but ESC and tab
    inside, no blanks at the edges (h11 refuses the rest before it reaches the wire)."""
    kept = bytes(c for c in value if (c >= 0x20 and c != 0x7F) or c in (0x09, 0x1B))
    return kept.strip(b" \t")


ROUTES = [("POST", "/users"), ("GET", "/users"), ("GET", "/users/1"), ("PUT", "/users/1"),
          ("DELETE", "/users/1"), ("POST", "/jobs"), ("GET", "/requests/x"),
          ("GET", "/healthz"), ("GET", "/nowhere"), ("PATCH", "/users")]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES),
       body=st.one_of(st.binary(max_size=300), _json_values.map(
           lambda v: json.dumps(v).encode())),
       auth=st.sampled_from(["good", "none", "junk"]),
       extra=st.dictionaries(st.sampled_from(["X-Request-ID", "Prefer", "Content-Type",
                                              "Accept"]),
                             st.binary(min_size=0, max_size=40).map(_header_safe),
                             max_size=3),
       query=st.text(max_size=30))
def test_random_requests_never_get_a_5xx(client: httpx.Client, served: Pipeline,
                                         route: tuple[str, str], body: bytes, auth: str,
                                         extra: dict[str, bytes], query: str) -> None:
    """Random bytes, JSON, headers and query strings on every route: a 4xx or 2xx answer, and
    every error in the envelope."""
    headers: dict[str, Any] = dict(extra)
    if auth == "good":
        headers.update(served.auth())
    elif auth == "junk":
        headers["Authorization"] = _header_safe(b"Bearer " + body[:50])
    method, path = route
    r = client.request(method, path, params={"q": query, "limit": query}, content=body,
                       headers=headers)
    assert r.status_code < 500 or r.status_code == 504, (r.status_code, r.text)
    if r.status_code >= 400 and r.status_code != 504:
        _envelope(r)
