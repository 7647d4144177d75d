"""`reference conformance api --url URL --jwt-secret S`: check a running API, in any language,
against docs/contract.md §8 over HTTP.

It signs its own HS256 tokens with the secret (`sub`, `exp`, `roles` ["users:write"], and
`aud`/`iss` when given), makes users and jobs of its own (emails unique to the run), and
checks statuses, bodies and headers. Every response must carry `X-Request-ID`; every error
response the envelope `{"error": {"code", "message"}}`; every response that waited on a
result `Server-Timing`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import re
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import h11
import httpx
import jwt
import orjson

from reference.auth import JwtKeys, sign_token
from reference.conformance.report import CheckFailed, Report

# The roles of docs/contract.md §8's default policy: user writes need `users:write`.
ROLES = ("users:write",)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIMING_PARTS = ("queue", "work", "notice", "total")


@dataclass
class ApiOptions:
    url: str
    jwt_secret: str
    audience: str | None = None
    issuer: str | None = None
    junit_xml: str | None = None
    timeout_s: float = 15.0
    max_body_bytes: int = 1024 * 1024


RECORD_CODES = frozenset({"not_found", "conflict", "job_failed"})  # only a record gives these


@dataclass
class Seen:
    what: str  # "METHOD path"
    response: httpx.Response
    sent_to_wait: bool  # a call the API publishes and waits on, if its input passes

    @property
    def waited(self) -> bool:
        """The API published the request and waited on its result: a success, or an error
        that only a result record gives (not one of the checks before publishing)."""
        if not self.sent_to_wait:
            return False
        if self.response.status_code < 400:
            return True
        body = _body(self.response)
        error = body.get("error") if isinstance(body, dict) else None
        return isinstance(error, dict) and error.get("code") in RECORD_CODES


@dataclass
class ApiRun:
    options: ApiOptions
    client: httpx.AsyncClient
    token_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    seen: list[Seen] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)

    # --- tokens ---------------------------------------------------------------------------

    def claims(self, sub: str = "conformance", ttl_s: int = 600) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "iat": now, "nbf": now, "exp": now + ttl_s,
                                  "roles": list(ROLES)}
        if self.options.audience:
            claims["aud"] = self.options.audience
        if self.options.issuer:
            claims["iss"] = self.options.issuer
        return claims

    def token(self, sub: str = "conformance", roles: tuple[str, ...] = ROLES) -> str:
        secret = self.options.jwt_secret
        with warnings.catch_warnings():  # a short secret is the API's business, not ours
            warnings.simplefilter("ignore")
            return sign_token(JwtKeys(secret, ("HS256",), secret), sub=sub, roles=roles,
                              ttl_s=600, audience=self.options.audience,
                              issuer=self.options.issuer)

    def signed(self, claims: dict[str, Any], secret: str | None = None) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return jwt.encode(claims, secret or self.options.jwt_secret, algorithm="HS256")

    # --- HTTP -----------------------------------------------------------------------------

    async def req(self, method: str, path: str, *, token: str | None = "default",
                  body: Any = None, content: bytes | None = None,
                  headers: dict[str, str] | None = None, waited: bool = False,
                  ) -> httpx.Response:
        """One call, recorded; `token` "default" is a valid token for `conformance`."""
        sent = dict(headers or {})
        if token == "default":
            token = self.token()
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token}")
        if body is not None:
            content = orjson.dumps(body)
        if content is not None:
            sent.setdefault("Content-Type", "application/json")
        try:
            response = await self.client.request(method, path, content=content, headers=sent)
        except httpx.HTTPError as exc:
            raise CheckFailed(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        self.seen.append(Seen(f"{method} {path}", response, waited))
        return response

    def email(self, tag: str) -> str:
        return f"{tag}-{self.token_id}@example.com"


# --- expectations -----------------------------------------------------------------------------


def _body(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _what(response: httpx.Response) -> str:
    return f"{response.request.method} {response.request.url.path}"


def expect_status(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise CheckFailed(f"{_what(response)} answered {response.status_code}, expected "
                          f"{status}: {response.text[:200]}")
    return _body(response)


def envelope_problem(response: httpx.Response) -> str | None:
    body = _body(response)
    error = body.get("error") if isinstance(body, dict) else None
    if (not isinstance(error, dict) or not isinstance(error.get("code"), str)
            or not isinstance(error.get("message"), str)):
        return f"no error envelope {{\"error\": {{code, message}}}}: {response.text[:200]}"
    return None


def expect_error(response: httpx.Response, status: int, code: str | None = None,
                 field: str | None = None) -> dict[str, Any]:
    expect_status(response, status)
    problem = envelope_problem(response)
    if problem:
        raise CheckFailed(f"{_what(response)} {status}: {problem}")
    error: dict[str, Any] = _body(response)["error"]
    if code is not None and error["code"] != code:
        raise CheckFailed(f"{_what(response)} {status} has code {error['code']!r}, expected "
                          f"{code!r}")
    if field is not None and error.get("field") != field and field not in error["message"]:
        raise CheckFailed(f"{_what(response)} {status} does not name the field {field!r}: "
                          f"{error}")
    return error


def expect_challenge(response: httpx.Response, *, token_came: bool) -> None:
    expect_error(response, 401)
    challenge = response.headers.get("WWW-Authenticate", "")
    if not challenge.lower().startswith("bearer"):
        raise CheckFailed(f"401 without a Bearer WWW-Authenticate challenge: {challenge!r}")
    has_error = re.search(r'error\s*=\s*"?invalid_token"?', challenge) is not None
    if token_came and not has_error:
        raise CheckFailed(f"401 for a bad token without error=\"invalid_token\": {challenge!r}")
    if not token_came and "error=" in challenge.replace(" ", ""):
        raise CheckFailed(f"401 without credentials names an error (RFC 6750 says it should "
                          f"not): {challenge!r}")


def expect_user(body: Any, *, name: str, email: str, user_id: int | None = None) -> None:
    if (not isinstance(body, dict) or type(body.get("id")) is not int or body["id"] < 1
            or body.get("name") != name or body.get("email") != email
            or (user_id is not None and body["id"] != user_id)):
        raise CheckFailed(f"user is {body}, expected id {user_id or 'new'}, name {name!r}, "
                          f"email {email!r}")


# --- the checks -------------------------------------------------------------------------------


Check = Callable[[ApiRun], Awaitable[None]]


async def check_healthz(run: ApiRun) -> None:
    expect_status(await run.req("GET", "/healthz", token=None), 200)


async def check_readyz(run: ApiRun) -> None:
    expect_status(await run.req("GET", "/readyz", token=None), 200)


async def check_metrics(run: ApiRun) -> None:
    response = await run.req("GET", "/metrics", token=None)
    expect_status(response, 200)
    if "# TYPE" not in response.text:
        raise CheckFailed(f"/metrics is not Prometheus text: {response.text[:100]!r}")


async def check_docs(run: ApiRun) -> None:
    spec = expect_status(await run.req("GET", "/openapi.json", token=None), 200)
    if not isinstance(spec, dict) or "openapi" not in spec or "/users" not in spec.get(
            "paths", {}):
        raise CheckFailed("/openapi.json is not an OpenAPI document with /users")
    expect_status(await run.req("GET", "/docs", token=None), 200)


async def check_auth_missing(run: ApiRun) -> None:
    expect_challenge(await run.req("GET", "/users?limit=1", token=None), token_came=False)
    expect_challenge(await run.req("POST", "/users", token=None,
                                   body={"name": "X", "email": run.email("noauth")}),
                     token_came=False)


async def check_auth_malformed(run: ApiRun) -> None:
    expect_challenge(await run.req("GET", "/users?limit=1", token="not-a-jwt"), token_came=True)
    response = await run.req("GET", "/users?limit=1", token=None,
                             headers={"Authorization": "Basic Y29uZm9ybWFuY2U6eA=="})
    expect_error(response, 401)


async def check_auth_expired(run: ApiRun) -> None:
    claims = {**run.claims(), "exp": int(time.time()) - 120}
    expect_challenge(await run.req("GET", "/users?limit=1", token=run.signed(claims)),
                     token_came=True)


async def check_auth_not_yet_valid(run: ApiRun) -> None:
    claims = {**run.claims(), "nbf": int(time.time()) + 3600}
    expect_challenge(await run.req("GET", "/users?limit=1", token=run.signed(claims)),
                     token_came=True)


async def check_auth_bad_signature(run: ApiRun) -> None:
    token = run.signed(run.claims(), secret="not-the-secret-" + uuid.uuid4().hex)
    expect_challenge(await run.req("GET", "/users?limit=1", token=token), token_came=True)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def check_auth_alg_none(run: ApiRun) -> None:
    header = _b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
    token = f"{header}.{_b64(orjson.dumps(run.claims()))}."
    expect_challenge(await run.req("GET", "/users?limit=1", token=token), token_came=True)


async def check_auth_claims(run: ApiRun) -> None:
    for missing in ("sub", "exp"):
        claims = {k: v for k, v in run.claims().items() if k != missing}
        response = await run.req("GET", "/users?limit=1", token=run.signed(claims))
        try:
            expect_challenge(response, token_came=True)
        except CheckFailed as exc:
            raise CheckFailed(f"a token without {missing}: {exc}") from None
    if run.options.audience:
        claims = {**run.claims(), "aud": "another-audience"}
        expect_challenge(await run.req("GET", "/users?limit=1", token=run.signed(claims)),
                         token_came=True)
    if run.options.issuer:
        claims = {**run.claims(), "iss": "another-issuer"}
        expect_challenge(await run.req("GET", "/users?limit=1", token=run.signed(claims)),
                         token_came=True)


async def _create(run: ApiRun, tag: str) -> dict[str, Any]:
    name, email = f"Conformance {tag.upper()}", run.email(tag)
    response = await run.req("POST", "/users", body={"name": name, "email": email},
                             waited=True)
    body = expect_status(response, 201)
    expect_user(body, name=name, email=email)
    location = response.headers.get("Location")
    if location != f"/users/{body['id']}":
        raise CheckFailed(f"201 with Location {location!r}, expected /users/{body['id']}")
    run.users[tag] = body
    return dict(body)


def _user(run: ApiRun, tag: str) -> dict[str, Any]:
    if tag not in run.users:
        raise CheckFailed("needs the users of users.create, which failed")
    return run.users[tag]


async def check_create(run: ApiRun) -> None:
    for tag in ("a", "b", "c"):
        await _create(run, tag)


async def check_get(run: ApiRun) -> None:
    a = _user(run, "a")
    body = expect_status(await run.req("GET", f"/users/{a['id']}", waited=True), 200)
    expect_user(body, name=a["name"], email=a["email"], user_id=a["id"])


async def check_list(run: ApiRun) -> None:
    mine = {_user(run, t)["id"] for t in ("a", "b", "c")}
    seen: list[Any] = []
    cursor: str | None = None
    for page_number in range(1, 2001):
        limit = 2 if page_number <= 3 else 100
        path = f"/users?limit={limit}" + (f"&cursor={cursor}" if cursor is not None else "")
        page = expect_status(await run.req("GET", path, waited=True), 200)
        if (not isinstance(page, dict) or not isinstance(page.get("items"), list)
                or "next_cursor" not in page):
            raise CheckFailed(f"GET /users is not {{items, next_cursor}}: {str(page)[:200]}")
        if len(page["items"]) > limit:
            raise CheckFailed(f"limit={limit} gave {len(page['items'])} items")
        seen.extend(item.get("id") for item in page["items"] if isinstance(item, dict))
        cursor = page["next_cursor"]
        if cursor is None:
            break
        if not isinstance(cursor, str):
            raise CheckFailed(f"next_cursor is {cursor!r}, expected a string or null")
    else:
        raise CheckFailed("GET /users did not end within 2000 pages")
    if seen != sorted(set(seen)):
        raise CheckFailed(f"pages are not in increasing id order without repeats: {seen[:20]}")
    if not mine <= set(seen):
        raise CheckFailed(f"paging missed the users {sorted(mine - set(seen))}")


async def check_update(run: ApiRun) -> None:
    a = _user(run, "a")
    name = "Conformance A renamed"
    body = expect_status(await run.req("PUT", f"/users/{a['id']}", body={"name": name},
                                       waited=True), 200)
    expect_user(body, name=name, email=a["email"], user_id=a["id"])
    got = expect_status(await run.req("GET", f"/users/{a['id']}", waited=True), 200)
    expect_user(got, name=name, email=a["email"], user_id=a["id"])
    run.users["a"] = got


async def check_delete(run: ApiRun) -> None:
    c = _user(run, "c")
    response = await run.req("DELETE", f"/users/{c['id']}", waited=True)
    expect_status(response, 204)
    if response.content:
        raise CheckFailed(f"204 with a body: {response.text[:100]!r}")
    expect_error(await run.req("GET", f"/users/{c['id']}", waited=True), 404, "not_found")
    expect_error(await run.req("DELETE", f"/users/{c['id']}", waited=True), 404, "not_found")


async def check_roles(run: ApiRun) -> None:
    """docs/contract.md §8's default policy: user writes need `users:write` (403 `forbidden` without
    it, before anything is published); reads need only a valid token."""
    a = _user(run, "a")
    bare = run.token(roles=())
    writes: list[tuple[str, str, Any]] = [
        ("POST", "/users", {"name": "No Role", "email": run.email("no-role")}),
        ("PUT", f"/users/{a['id']}", {"name": "No Role"}),
        ("DELETE", f"/users/{a['id']}", None),
    ]
    for method, path, body in writes:
        expect_error(await run.req(method, path, token=bare, body=body), 403, "forbidden")
    got = expect_status(await run.req("GET", f"/users/{a['id']}", token=bare, waited=True), 200)
    expect_user(got, name=a["name"], email=a["email"], user_id=a["id"])


async def check_job(run: ApiRun) -> None:
    body = expect_status(await run.req("POST", "/jobs", body={"duration_ms": 100, "steps": 2},
                                       waited=True), 200)
    if not isinstance(body, dict) or {k: body.get(k) for k in ("duration_ms", "steps")} != {
            "duration_ms": 100, "steps": 2}:
        raise CheckFailed(f"POST /jobs gave {body}, expected duration_ms 100 and steps 2")


async def check_job_failed(run: ApiRun) -> None:
    expect_error(await run.req("POST", "/jobs", body={"duration_ms": 0, "fail": True},
                               waited=True), 422, "job_failed")


async def check_respond_async(run: ApiRun) -> None:
    response = await run.req("POST", "/jobs", body={"duration_ms": 800, "steps": 4},
                             headers={"Prefer": "respond-async"})
    expect_status(response, 202)
    location = response.headers.get("Location", "")
    match = re.fullmatch(r"/requests/([^/?]+)", location)
    if match is None:
        raise CheckFailed(f"202 with Location {location!r}, expected /requests/<request_id>")
    rid = match.group(1)
    if response.headers.get("X-Request-ID") != rid:
        raise CheckFailed(f"X-Request-ID {response.headers.get('X-Request-ID')!r} of a "
                          f"published request is not its request_id {rid}")
    deadline = time.monotonic() + run.options.timeout_s
    statuses: list[str] = []
    while True:
        body = expect_status(await run.req("GET", location), 200)
        if not isinstance(body, dict) or body.get("status") not in (
                "Queued", "Running", "Success", "Fail"):
            raise CheckFailed(f"GET {location} is not a record: {str(body)[:200]}")
        if not statuses or statuses[-1] != body["status"]:
            statuses.append(body["status"])
        if body["status"] in ("Success", "Fail"):
            break
        if time.monotonic() > deadline:
            raise CheckFailed(f"GET {location} still {body['status']} after "
                              f"{run.options.timeout_s:g} s")
        await asyncio.sleep(0.05)
    result = body.get("result")
    if body["status"] != "Success" or not isinstance(result, dict) or result.get("steps") != 4:
        raise CheckFailed(f"the async job ended {str(body)[:200]}")
    if body.get("request_id") not in (None, rid):
        raise CheckFailed(f"GET {location} shows request_id {body.get('request_id')}")
    other = run.token(sub="someone-else-" + run.token_id)
    expect_error(await run.req("GET", location, token=other), 404)


async def check_unknown_request(run: ApiRun) -> None:
    expect_error(await run.req("GET", f"/requests/{uuid.uuid4()}"), 404)


async def check_request_id_form(run: ApiRun) -> None:
    expect_error(await run.req("GET", "/requests/not-a-request-id"), 404)
    response = await run.req("POST", "/jobs", body={"duration_ms": 0},
                             headers={"Prefer": "respond-async"})
    expect_status(response, 202)
    location = response.headers.get("Location", "")
    expect_status(await run.req("GET", location), 200)
    expect_error(await run.req("GET", location.upper().replace("/REQUESTS/", "/requests/")),
                 404)


async def check_not_json(run: ApiRun) -> None:
    expect_error(await run.req("POST", "/users", content=b'{"name": "X", '), 400)
    expect_error(await run.req("POST", "/jobs", content=b"not json"), 400)


async def check_validation(run: ApiRun) -> None:
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/users", {"name": "X"}, "email"),
        ("POST", "/users", {"name": "X", "email": "not-an-email"}, "email"),
        ("POST", "/users", {"email": run.email("v")}, "name"),
        ("POST", "/jobs", {"duration_ms": -1}, "duration_ms"),
        ("POST", "/jobs", {"duration_ms": "soon"}, "duration_ms"),
        ("GET", "/users?limit=1000", None, "limit"),
    ]
    for method, path, body, name in cases:
        expect_error(await run.req(method, path, body=body), 422, "validation", field=name)


async def check_too_large(run: ApiRun) -> None:
    size = run.options.max_body_bytes + 64 * 1024
    content = orjson.dumps({"name": "x" * size, "email": run.email("large")})
    expect_error(await post_oversized(run, "/users", content), 413)


async def post_oversized(run: ApiRun, path: str, body: bytes) -> httpx.Response:
    """POST a body over the limit as a careful client does: the headers first, since a server
    may answer 413 from Content-Length alone and close the connection (a client still
    sending then meets a reset and loses the answer); the body only if no answer came
    within a second. Then read the answer, bounded."""
    url = httpx.URL(run.options.url)
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    timeout = run.options.timeout_s
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(url.host, port, ssl=True if tls else None), timeout)
    except (OSError, TimeoutError) as exc:
        raise CheckFailed(f"POST {path}: cannot connect: {exc}") from None
    conn = h11.Connection(h11.CLIENT)
    headers = [("Host", f"{url.host}:{port}"), ("Authorization", f"Bearer {run.token()}"),
               ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
               ("Connection", "close")]
    try:
        writer.write(conn.send(h11.Request(method="POST", target=url.path.rstrip("/") + path,
                                           headers=headers)))
        await writer.drain()
        event = await _next_event(conn, reader, 1.0)
        if event is None:
            with contextlib.suppress(ConnectionError, h11.LocalProtocolError):
                writer.write(conn.send(h11.Data(data=body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
            event = await _next_event(conn, reader, timeout)
        if not isinstance(event, h11.Response):
            raise CheckFailed(f"POST {path} with {len(body)} bytes: no answer "
                              f"({type(event).__name__ if event else 'timeout'})")
        content = b""
        while isinstance(part := await _next_event(conn, reader, timeout), h11.Data):
            content += part.data
    except h11.RemoteProtocolError as exc:
        raise CheckFailed(f"POST {path}: not HTTP/1.1: {exc}") from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    response = httpx.Response(
        event.status_code, content=content,
        headers=[(k.decode(), v.decode()) for k, v in event.headers],
        request=httpx.Request("POST", run.options.url.rstrip("/") + path))
    run.seen.append(Seen(f"POST {path}", response, False))
    return response


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader,
                      timeout_s: float) -> h11.Event | None:
    """The next HTTP event from the server, or None when nothing came within `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        event = conn.next_event()
        if event is h11.PAUSED:
            return None
        if event is not h11.NEED_DATA:
            assert isinstance(event, h11.Event)
            return event
        try:
            data = await asyncio.wait_for(reader.read(65536), max(0.0, deadline - loop.time()))
        except TimeoutError:
            return None
        except ConnectionError:
            data = b""
        conn.receive_data(data)


async def check_not_found(run: ApiRun) -> None:
    expect_error(await run.req("GET", "/users/9000000000000", waited=True), 404, "not_found")
    expect_error(await run.req("GET", f"/no-such-route-{run.token_id}"), 404)


async def check_conflict(run: ApiRun) -> None:
    b = _user(run, "b")
    expect_error(await run.req("POST", "/users", body={"name": "Dup", "email": b["email"]},
                               waited=True), 409, "conflict")


async def check_x_request_id(run: ApiRun) -> None:
    if not run.seen:
        raise CheckFailed("no responses to check")
    missing = [s.what for s in run.seen if not s.response.headers.get("X-Request-ID")]
    if missing:
        raise CheckFailed(f"{len(missing)} of {len(run.seen)} responses without X-Request-ID, "
                          f"e.g. {missing[0]}")
    not_ids = [f"{s.what}: {s.response.headers['X-Request-ID']}" for s in run.seen
               if s.waited and not UUID.fullmatch(s.response.headers["X-Request-ID"])]
    if not_ids:
        raise CheckFailed(f"X-Request-ID of a published request is not its request_id (a "
                          f"UUID): {not_ids[0]}")


async def check_server_timing(run: ApiRun) -> None:
    waited = [s for s in run.seen if s.waited]
    if not waited:
        raise CheckFailed("no waited responses to check")
    for s in waited:
        timing = s.response.headers.get("Server-Timing", "")
        parts = {p.split(";")[0].strip(): p for p in timing.split(",")}
        lacking = [name for name in TIMING_PARTS
                   if not re.search(r"dur=\d+(\.\d+)?", parts.get(name, ""))]
        if lacking:
            raise CheckFailed(f"{s.what} ({s.response.status_code}): Server-Timing "
                              f"{timing!r} lacks {', '.join(lacking)}")


async def check_envelope(run: ApiRun) -> None:
    errors = [s for s in run.seen if s.response.status_code >= 400]
    if not errors:
        raise CheckFailed("no error responses to check")
    for s in errors:
        problem = envelope_problem(s.response)
        if problem:
            raise CheckFailed(f"{s.what} ({s.response.status_code}): {problem}")


CHECKS: list[tuple[str, Check]] = [
    ("health.healthz", check_healthz),
    ("health.readyz", check_readyz),
    ("metrics", check_metrics),
    ("docs.openapi", check_docs),
    ("auth.missing", check_auth_missing),
    ("auth.malformed", check_auth_malformed),
    ("auth.expired", check_auth_expired),
    ("auth.not_yet_valid", check_auth_not_yet_valid),
    ("auth.bad_signature", check_auth_bad_signature),
    ("auth.alg_none", check_auth_alg_none),
    ("auth.required_claims", check_auth_claims),
    ("users.create", check_create),
    ("users.get", check_get),
    ("users.list", check_list),
    ("users.update", check_update),
    ("users.delete", check_delete),
    ("auth.roles", check_roles),
    ("jobs.run", check_job),
    ("jobs.fail", check_job_failed),
    ("requests.respond_async", check_respond_async),
    ("requests.unknown", check_unknown_request),
    ("requests.id_form", check_request_id_form),
    ("errors.not_json", check_not_json),
    ("errors.validation", check_validation),
    ("errors.too_large", check_too_large),
    ("errors.not_found", check_not_found),
    ("errors.conflict", check_conflict),
    ("headers.x_request_id", check_x_request_id),
    ("headers.server_timing", check_server_timing),
    ("errors.envelope", check_envelope),
]
CHECK_NAMES = tuple(name for name, _ in CHECKS)


async def run_api_async(options: ApiOptions, out: TextIO) -> int:
    report = Report("conformance.api", out)
    out.write(f"conformance api: {options.url}\n")
    out.flush()
    timeout = httpx.Timeout(options.timeout_s)
    async with httpx.AsyncClient(base_url=options.url.rstrip("/"), timeout=timeout) as client:
        run = ApiRun(options, client)
        for name, check in CHECKS:
            await report.run(name, functools.partial(check, run), timeout_s=3 * options.timeout_s)
    if options.junit_xml:
        report.write_junit(options.junit_xml)
    out.write(report.summary() + "\n")
    out.flush()
    return 1 if report.failed else 0


def run_api(options: ApiOptions, out: TextIO = sys.stdout) -> int:
    return asyncio.run(run_api_async(options, out))
