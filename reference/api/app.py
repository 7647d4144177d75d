"""The Sanic application: auth, validation, submit, wait, and the mapping of records to HTTP."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
import typing
import uuid
from typing import Any

import orjson
from pydantic import BaseModel
from sanic import Request, Sanic
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, empty, raw
from sanic_ext import Extend

from reference.actions import Action, ActionRegistry, Route, load_actions
from reference.api.events import UpdatesHub, install_events_route
from reference.api.http_errors import STATUS_BY_CODE, error_body, status_for
from reference.api.metrics import CONTENT_TYPE, ApiMetrics
from reference.api.openapi import build_document, render_docs
from reference.bootstrap import Services, build
from reference.errors import (
    AuthError,
    BrokerUnavailable,
    DomainError,
    NotQueued,
    StoreUnavailable,
    ValidationFailed,
)
from reference.messages import Principal
from reference.policy import RolesPolicy
from reference.records import BAD_RECORD, MalformedRecord, ResultRecord
from reference.requester import Requester, Waited
from reference.settings import Settings
from reference.worker import CoreWorker

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
# The form of the request ids this API issues (uuid4, lower case): the only form read back.
ISSUED_REQUEST_ID = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_app_ids = itertools.count(1)
App = Sanic[Any, Any]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    return raw(orjson.dumps(body), status=status, headers=headers,
               content_type="application/json")


def _error(status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
           field: str | None = None, **extra: Any) -> HTTPResponse:
    return _json(error_body(code, message, field=field, **extra), status, headers)


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    embedded_worker: bool = False,
    name: str | None = None,
) -> App:
    """The API. With `services` given, the caller owns them (tests); otherwise the app builds
    them in its serving process, before it starts serving."""
    app: App = Sanic(name or f"reference_api_{next(_app_ids)}")
    app.config.REQUEST_MAX_SIZE = settings.max_body_bytes
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.REQUEST_ID_HEADER = "X-Request-ID"
    app.config.OAS = False  # our own document: reference/api/openapi.py
    app.config.CORS = False
    Extend(app)
    app.ctx.settings = settings
    app.ctx.metrics = ApiMetrics()
    registry = services.actions if services is not None else load_actions(settings.actions)
    policy = (services.roles if services is not None
              else RolesPolicy.load(settings.roles_policy, registry))

    @app.before_server_start
    async def _start(app: App) -> None:
        owned = services is None
        svc = build(settings, actions=registry, policy=policy) if owned else services
        assert svc is not None
        if owned:
            await svc.start()
        completion = svc.completion()
        await completion.start()
        app.ctx.services = svc
        app.ctx.owned = owned
        app.ctx.completion = completion
        app.ctx.requester = svc.requester(completion)
        app.ctx.verifier = svc.verifier()
        await app.ctx.verifier.start()  # the JWKS refresh task, when a JWKS is configured
        app.ctx.updates = UpdatesHub(svc.results)
        await app.ctx.updates.start()
        app.ctx.worker = None
        if embedded_worker:
            worker: CoreWorker = svc.worker()
            await worker.start()
            app.ctx.worker = worker

    @app.after_server_stop
    async def _stop(app: App) -> None:
        if app.ctx.worker is not None:
            await app.ctx.worker.stop()
        await app.ctx.completion.close()
        await app.ctx.updates.close()
        await app.ctx.verifier.close()
        await app.ctx.metrics.close()
        if app.ctx.owned:
            await app.ctx.services.close()

    _install_middleware(app)
    _install_error_handlers(app)
    _install_routes(app, registry, policy)
    install_events_route(app)
    for action in registry:
        if action.route is not None:
            _install_action_route(app, action, action.route)
    return app


# --- middleware -------------------------------------------------------------------------------


def _install_middleware(app: App) -> None:
    @app.on_request
    async def _begin(request: Request) -> None:
        request.ctx.started = time.perf_counter()
        request.ctx.request_id = None

    @app.on_response  # type: ignore[untyped-decorator]
    async def _finish(request: Request, response: HTTPResponse) -> None:
        response.headers["X-Request-ID"] = _response_request_id(request)
        if request.method == "NONE":  # the connection closed before a request was read
            return
        route = request.route.path if request.route else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "other"
        app.ctx.metrics.requests.labels(route or "/", method, str(response.status)).inc()


def _response_request_id(request: Request) -> str:
    """The request id of a published request; else the client's X-Request-ID when it is 1 to
    128 visible ASCII characters; else one of ours."""
    rid: str | None = getattr(request.ctx, "request_id", None)
    if rid:
        return rid
    given = request.headers.get("x-request-id")
    if isinstance(given, str) and CLIENT_REQUEST_ID.fullmatch(given):
        return str(given)
    if not hasattr(request.ctx, "own_id"):
        request.ctx.own_id = str(uuid.uuid4())
    own: str = request.ctx.own_id
    return own


class OwnHttpError(SanicException):
    """An HTTP error whose message we wrote (others get fixed words)."""


# Fixed words, not the library's text (which may quote the client's bytes back).
_HTTP_MESSAGES = {
    "bad_request": "bad request",
    "not_found": "no such route",
    "method_not_allowed": "method not allowed on this route",
    "timeout": "the request was not received in time",
    "too_large": "the request body is too large",
}


def _install_error_handlers(app: App) -> None:
    @app.exception(AuthError)
    async def _unauthorized(request: Request, exc: AuthError) -> HTTPResponse:
        challenge = 'Bearer realm="reference"'
        if exc.token_present:
            desc = str(exc).replace('"', "'")
            challenge += f', error="invalid_token", error_description="{desc}"'
        return _error(401, "unauthorized", str(exc), headers={"WWW-Authenticate": challenge})

    @app.exception(DomainError)
    async def _domain(request: Request, exc: DomainError) -> HTTPResponse:
        return _error(status_for(exc.code), exc.code, exc.message, field=exc.field)

    @app.exception(BrokerUnavailable, StoreUnavailable)
    async def _unavailable(request: Request, exc: Exception) -> HTTPResponse:
        log.warning("503: %s", exc)
        if isinstance(exc, NotQueued):  # its record says "not queued": let the client look
            request.ctx.request_id = exc.request_id
        return _error(503, "unavailable", str(exc), headers={"Retry-After": "1"})

    @app.exception(SanicException)
    async def _http(request: Request, exc: SanicException) -> HTTPResponse:
        status = getattr(exc, "status_code", 500) or 500
        if status >= 500:
            log.error("%s on %s %s: %s", status, request.method, request.path, exc)
            return _error(status, "internal", "internal error")
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                 408: "timeout", 413: "too_large"}
        headers = None
        if status == 405:  # RFC 9110: a 405 lists the methods the route has, always
            headers = {"Allow": ", ".join(_allowed_methods(request, exc))}
        code = codes.get(status, "http_error")
        message = (str(exc) if isinstance(exc, OwnHttpError)
                   else _HTTP_MESSAGES.get(code, "request refused"))
        return _error(status, code, message, headers=headers)

    @app.exception(Exception)
    async def _unexpected(request: Request, exc: Exception) -> HTTPResponse:
        # Every answer uses the envelope, this one too; the details go to the log only.
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, "internal", "internal error")


def _allowed_methods(request: Request, exc: SanicException) -> list[str]:
    """The methods the request's path has. Sanic's router names them only for methods it
    knows of (not TRACE, CONNECT or made-up ones) and not on every path; else ask it."""
    allowed = set(getattr(exc, "allowed_methods", None) or ())
    if not allowed:
        for method in sorted(KNOWN_METHODS):
            try:
                request.app.router.get(request.path, method, None)
            except SanicException:
                continue
            allowed.add(method)
    return sorted(allowed)


# --- helpers ----------------------------------------------------------------------------------


def _principal(request: Request) -> Principal:
    principal: Principal = request.app.ctx.verifier.verify_header(
        request.headers.get("authorization")
    )
    return principal


def _body(request: Request) -> dict[str, Any]:
    try:
        data = orjson.loads(request.body or b"")
    except orjson.JSONDecodeError:
        raise OwnHttpError("body is not valid JSON", status_code=400) from None
    if not isinstance(data, dict):
        raise ValidationFailed("body must be a JSON object", field="body")
    return data


MAX_NUMBER_DIGITS = 16


def _from_text(model: type[BaseModel], name: str, raw: str) -> Any:
    """A path or query value as the JSON type its params field declares (ASCII digits only:
    "²".isdigit() is true, and int("²") raises)."""
    info = model.model_fields.get(name)
    annotation = info.annotation if info is not None else str
    kinds = {a for a in typing.get_args(annotation)} or {annotation}
    if int in kinds or float in kinds:
        digits = raw.removeprefix("-")
        whole = digits.isascii() and digits.isdigit() and len(digits) <= MAX_NUMBER_DIGITS
        if whole:
            return int(raw)
        if float in kinds and digits.replace(".", "", 1).isdigit() and digits.isascii():
            return float(raw)
        raise ValidationFailed(f"{name} must be {'a number' if float in kinds else 'an integer'}",
                               field=name)
    if bool in kinds:
        if raw not in {"true", "false"}:
            raise ValidationFailed(f"{name} must be true or false", field=name)
        return raw == "true"
    return raw


def _wants_async(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(p.strip().lower() == "respond-async" for p in prefer.split(","))


def _server_timing(record: ResultRecord, seen_at: float, total_ms: float) -> str:
    parts = []

    def part(name: str, start: float | None, end: float | None) -> None:
        if start is not None and end is not None:
            parts.append(f"{name};dur={max(0.0, end - start):.3f}")

    part("queue", record.queued_at, record.started_at)
    part("work", record.started_at, record.finished_at)
    part("notice", record.finished_at, seen_at)
    parts.append(f"total;dur={total_ms:.3f}")
    return ", ".join(parts)


def _record_body(request_id: str, record: ResultRecord) -> dict[str, Any]:
    body = record.to_dict()
    body.pop("owner", None)
    return {"request_id": request_id, **body}


async def _dispatch(
    request: Request,
    principal: Principal,
    action: Action,
    params: dict[str, Any],
    route: Route,
) -> HTTPResponse:
    """Validate, submit, wait, answer: the whole life of one synchronous-looking call."""
    requester: Requester = request.app.ctx.requester
    params = action.validate(params)
    respond_async = _wants_async(request)
    submitted = await requester.submit(action.name, params, principal,
                                       wait=not respond_async, trace=request.headers)
    rid = submitted.request_id
    request.ctx.request_id = rid
    location = {"Location": f"/requests/{rid}"}
    if respond_async:
        return _json({"request_id": rid, "status": "Queued", "detail": "queued"}, 202,
                     {**location, "Preference-Applied": "respond-async"})
    metrics: ApiMetrics = request.app.ctx.metrics
    metrics.waiting.inc()
    try:
        waited = await requester.wait(submitted)
    finally:
        metrics.waiting.dec()
    return _answer(request, action, waited, route, location)


def _check_failure(record: ResultRecord) -> None:
    """A Fail record must carry an error code of the contract (SPEC §3)."""
    code = record.error_code
    if code == BAD_RECORD:
        raise MalformedRecord(record.detail)
    if code is not None and code not in STATUS_BY_CODE:
        raise MalformedRecord(f"unknown error code {code!r}")


def _envelope_error(record: ResultRecord) -> dict[str, Any]:
    """A Fail record's error in the envelope's shape: `code`, `message` (the record's detail
    when it has none), `field` only when it is a string; other members a core wrote are kept."""
    written = record.error or {}
    error = {**written, "code": record.error_code or "internal",
             "message": written.get("message") or record.detail}
    if not isinstance(error.get("field"), str):
        error.pop("field", None)
    return error


def _answer(request: Request, action: Action, waited: Waited, route: Route,
            location: dict[str, str]) -> HTTPResponse:
    rid = waited.request_id
    record = waited.record
    if record is None or not record.is_final:
        last = record.status if record else "Queued"
        detail = "no final result within the request timeout; read it later at Location"
        # The record's fields, as the contract has them, and the error envelope beside them.
        return _json({"request_id": rid, "status": last, "detail": detail,
                      "error": {"code": "timeout", "message": detail}}, 504, location)
    total_ms = (time.perf_counter() - request.ctx.started) * 1000
    path = request.route.path if request.route else "unmatched"
    request.app.ctx.metrics.latency.labels(path).observe(total_ms / 1000)
    headers = {"Server-Timing": _server_timing(record, waited.seen_at, total_ms)}
    try:
        if record.status == "Success":
            action.check_result(record.result)
        else:
            _check_failure(record)
    except MalformedRecord as exc:
        log.error("bad record for %s (%s): %s", rid, action.name, exc)
        return _error(502, BAD_RECORD, f"the result record breaks the contract: {exc}",
                      headers=headers, request_id=rid)
    if record.status != "Success":
        error = _envelope_error(record)
        status = status_for(record.error_code)
        if status == 504:
            headers.update(location)
        body = {"request_id": rid, "status": record.status, "detail": record.detail,
                "error": error}
        return _json(body, status, headers)
    if route.status == 204:
        return empty(204, headers=headers)
    where = route.location_of(record.result)
    if where is not None:
        headers["Location"] = where
    return _json(record.result, route.status, headers)


# --- routes -----------------------------------------------------------------------------------


def _install_routes(app: App, registry: ActionRegistry, policy: RolesPolicy) -> None:
    spec = build_document(registry, policy)
    document = orjson.dumps(spec)
    docs_page = render_docs(spec).encode()

    @app.get("/requests/<request_id>")
    async def read_request(request: Request, request_id: str) -> HTTPResponse:
        """The result record of a request you made; 404 if unknown, expired, or not yours."""
        principal = _principal(request)
        if not ISSUED_REQUEST_ID.fullmatch(request_id):  # never a store key of another family
            return _error(404, "not_found", "no such request (unknown, expired, or not yours)")
        record = await request.app.ctx.requester.read(request_id)
        if record is None or record.owner is None or record.owner != principal.sub:
            return _error(404, "not_found", "no such request (unknown, expired, or not yours)")
        request.ctx.request_id = request_id
        return _json(_record_body(request_id, record))

    @app.get("/healthz")
    async def healthz(request: Request) -> HTTPResponse:
        """Liveness: the process answers."""
        return _json({"status": "ok"})

    @app.get("/readyz")
    async def readyz(request: Request) -> HTTPResponse:
        """Readiness: broker and store answer within a few seconds."""
        svc: Services = request.app.ctx.services
        checks = {"broker": svc.broker.ping(), "store": svc.results.ping()}
        report: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check, READY_TIMEOUT_S)
                report[name] = "ok"
            except (BrokerUnavailable, StoreUnavailable, TimeoutError) as exc:
                report[name] = f"unavailable: {exc or 'timeout'}"
            except Exception as exc:  # whatever the check raised, the answer is 503
                log.exception("readiness check of the %s failed", name)
                report[name] = f"unavailable: {type(exc).__name__}"
        ready = all(v == "ok" for v in report.values())
        return _json({"status": "ready" if ready else "unavailable", **report},
                     200 if ready else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> HTTPResponse:
        """Prometheus text format, with the depth of the queue and its DLQ read just now."""
        api_metrics: ApiMetrics = request.app.ctx.metrics
        queue = request.app.ctx.settings.queue
        depth = await api_metrics.read_depth(request.app.ctx.services.broker,
                                             (queue, queue + ".dlq"))
        return raw(api_metrics.render(depth), content_type=CONTENT_TYPE)

    async def openapi_json(request: Request) -> HTTPResponse:
        """The OpenAPI 3.1 document (also at /docs/openapi.json)."""
        return raw(document, content_type="application/json")

    app.add_route(openapi_json, "/openapi.json", methods=["GET"])
    app.add_route(openapi_json, "/docs/openapi.json", methods=["GET"], name="docs_openapi")

    @app.get("/docs")
    async def docs(request: Request) -> HTTPResponse:
        """The API's documentation, one self-contained page (works offline)."""
        return raw(docs_page, content_type="text/html; charset=utf-8")


def _params(request: Request, action: Action, route: Route,
            path_args: dict[str, str]) -> dict[str, Any]:
    """Path parameters with the JSON body (POST, PUT, PATCH) or with those query parameters
    that are fields of the action's params (others are ignored, as caches add some)."""
    model = action.params
    params: dict[str, Any]
    if route.takes_body:
        params = _body(request)
        for name in path_args:
            if name in params:
                raise ValidationFailed(f"the {name} comes from the path, not the body",
                                       field=name)
    else:
        # A blank value (`?cursor=`) is a value: it must convert like any other, not vanish.
        query = request.get_args(keep_blank_values=True)
        params = {name: _from_text(model, name, values[0])
                  for name, values in query.items()
                  if name in model.model_fields and name not in path_args and values}
    for name, text in path_args.items():
        params[name] = _from_text(model, name, text)
    return params


def _install_action_route(app: App, action: Action, route: Route) -> None:
    async def handler(request: Request, **path_args: str) -> HTTPResponse:
        principal = _principal(request)  # 401, then 403, then 400 and 422
        request.app.ctx.requester.policy.check(action.name, principal)
        params = _params(request, action, route, path_args)
        return await _dispatch(request, principal, action, params, route)

    handler.__doc__ = action.summary or (action.handler.__doc__ or action.name).strip()
    handler.__name__ = "action_" + "".join(c if c.isalnum() else "_" for c in action.name)
    app.add_route(handler, route.path, methods=[route.method], name=handler.__name__)
