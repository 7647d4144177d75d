"""The OpenAPI 3.1 document, built from the action registry and the fixed routes.

Each action's params and result models appear once under `components/schemas` (pydantic's
JSON Schema, which is JSON Schema 2020-12, as OpenAPI 3.1 uses), so that what the document
shows is what the API and the worker validate with. From them each operation gets:

- its path parameters, and either its query parameters (GET, DELETE) or its JSON body (POST,
  PUT, PATCH); a body never lists the path parameters (the API refuses them there: 422);
- `null` allowed for every field that has a default, since the params models read `null` as
  absent (a query parameter has no `null`: it is left out instead);
- the bearer security scheme, the success answer with its headers, the 202 of
  `Prefer: respond-async`, and every error status it can answer, each with the error
  envelope `{"error": {"code", "message", "field"?}}` (plus `request_id`, `status`, `detail`
  when the request was published);
- links from a result with a Location template to the operations on that path, and from a
  202 or 504 to `GET /requests/{request_id}`, so that stateful testing can follow them.

`tests/api/test_openapi.py` checks these properties; `tests/schemathesis_run.py` runs
schemathesis with every check against the served document.
"""

from __future__ import annotations

import copy
import html
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from reference import __version__
from reference.actions import Action, ActionRegistry, NoResult
from reference.policy import RolesPolicy

REF = "#/components/schemas/{model}"
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}]
READ_REQUEST = "readRequest"  # the operationId of GET /requests/{request_id}
# The form of the request ids the API issues (uuid4, lower case): the only form it reads back.
REQUEST_ID_PATTERN = (r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}"
                      r"-[0-9a-f]{12}$")
ANNOTATIONS = ("title", "description", "default", "examples", "deprecated")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


_HEADERS: dict[str, Any] = {
    "X-Request-ID": {
        "description": "On every answer: the request_id of a request that was published; "
                       "else the client's X-Request-ID when it is 1 to 128 visible ASCII "
                       "characters; else a fresh UUID.",
        "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 128}},
    "Location": {"description": "Where the resource or the request's record is.",
                 "required": True, "schema": {"type": "string", "minLength": 1}},
    "Server-Timing": {"description": "queue, work, notice and total durations in ms, on "
                                     "every answer that came from a final record.",
                      "required": True, "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before trying again.", "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "WWW-Authenticate": {"description": "`Bearer realm=\"reference\"`, with "
                                        "`error=\"invalid_token\"` when a token came.",
                         "required": True, "schema": {"type": "string"}},
    "Preference-Applied": {"description": "`respond-async`.", "required": True,
                           "schema": {"type": "string", "enum": ["respond-async"]}},
}

_ERROR_DETAIL = {
    "type": "object",
    "description": "What went wrong. `field` names the parameter at fault, when there is one.",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "validation, not_found, conflict, forbidden, "
                                                  "unknown_action, deadline_exceeded, "
                                                  "job_failed, internal, unavailable, "
                                                  "bad_record, unauthorized, bad_request, "
                                                  "method_not_allowed, too_large, timeout or "
                                                  "http_error"},
        "message": {"type": "string"},
        "field": {"type": "string"},
    },
}
_ERROR = {
    "type": "object",
    "description": "The error envelope. An answer about a request that was published also "
                   "carries its `request_id`, and one from a Fail record `status` and "
                   "`detail`.",
    "required": ["error"],
    "properties": {
        "error": _ref("ErrorDetail"),
        "request_id": {"type": "string"},
        "status": {"type": "string", "enum": ["Fail"]},
        "detail": {"type": "string"},
    },
}
_PENDING = {
    "type": "object",
    "description": "A request that was published and is not final (yet): read its record at "
                   "Location. `error.code` is `timeout`.",
    "required": ["request_id", "status", "detail", "error"],
    "properties": {
        "request_id": {"type": "string"},
        "status": {"type": "string", "enum": ["Queued", "Running"]},
        "detail": {"type": "string"},
        "error": _ref("ErrorDetail"),
    },
}
_ACCEPTED = {
    "type": "object",
    "description": "A request that was published (`Prefer: respond-async`): read its record "
                   "at Location.",
    "required": ["request_id", "status", "detail"],
    "properties": {
        "request_id": {"type": "string"},
        "status": {"type": "string", "enum": ["Queued"]},
        "detail": {"type": "string"},
    },
}
_RECORD = {
    "type": "object",
    "description": "A request's result record, with its request_id and without its owner. "
                   "Fields a core adds are kept.",
    "required": ["request_id", "status", "detail"],
    "properties": {
        "request_id": {"type": "string"},
        "status": {"type": "string", "enum": ["Queued", "Running", "Success", "Fail"]},
        "detail": {"type": "string"},
        "progress": {"type": "number", "minimum": 0, "maximum": 100},
        "result": {},
        "error": {"type": "object", "required": ["code"],
                  "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                                 "field": {"type": ["string", "null"]}}},
        "queued_at": {"type": "number", "description": "epoch ms"},
        "started_at": {"type": "number", "description": "epoch ms"},
        "updated_at": {"type": "number", "description": "epoch ms"},
        "finished_at": {"type": "number", "description": "epoch ms"},
    },
}
_HEALTH = {"type": "object", "required": ["status"],
           "properties": {"status": {"type": "string", "enum": ["ok"]}}}
_READINESS = {
    "type": "object",
    "required": ["status", "broker", "store"],
    "properties": {"status": {"type": "string", "enum": ["ready", "unavailable"]},
                   "broker": {"type": "string", "description": "ok, or why not"},
                   "store": {"type": "string", "description": "ok, or why not"}},
}

# Statuses an action's operation can answer besides its success and the 202, and why.
_ACTION_ERRORS = {
    "400": "a body that is not JSON (where one is read), or a core that does not know the "
           "action (unknown_action)",
    "401": "no valid token",
    "403": "the token lacks a role the action needs (forbidden)",
    "404": "not found",
    "409": "conflict",
    "413": "body too large",
    "422": "bad params (the field is named), or job_failed",
    "500": "internal error",
    "502": "a result record that breaks the contract (bad_record)",
    "503": "broker or store unavailable",
    "504": "no final result in time (read it at Location), or deadline_exceeded",
}
_BODY_ONLY = {"413"}  # only where a body is read


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error(description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "headers": {"X-Request-ID": _header("X-Request-ID"),
                                                    **(headers or {})},
            "content": _json_content(_ref("Error"))}


def _unauthorized() -> dict[str, Any]:
    return _error("no valid token", headers={"WWW-Authenticate": _header("WWW-Authenticate")})


def _path_names(path: str) -> list[str]:
    return [seg[1:-1].split(":")[0] for seg in path.split("/")
            if seg.startswith("<") and seg.endswith(">")]


def _openapi_path(path: str) -> str:
    return "/".join("{" + seg[1:-1].split(":")[0] + "}" if seg.startswith("<") else seg
                    for seg in path.split("/"))


def _allows_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_allows_null(branch) for branch in schema.get("anyOf", [])
               if isinstance(branch, dict))


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` that also admits null (the params models read null as absent)."""
    if _allows_null(schema) or not schema:
        return schema
    notes = {k: v for k, v in schema.items() if k in ANNOTATIONS}
    inner = {k: v for k, v in schema.items() if k not in ANNOTATIONS}
    return {"anyOf": [inner, {"type": "null"}], **notes}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without its null branch: what a path or query value can be."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list):
        return schema
    kept = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
    rest = {k: v for k, v in schema.items()
            if k != "anyOf" and not (k == "default" and v is None)}
    if len(kept) == 1:
        return {**kept[0], **rest}
    return {**rest, "anyOf": kept}


def _params_schema(schema: dict[str, Any], drop: Sequence[str] = ()) -> dict[str, Any]:
    """A params model's schema, without the fields in `drop` (they come from the path), every
    field that has a default also admitting null."""
    out = copy.deepcopy(schema)
    required = [name for name in out.get("required", []) if name not in drop]
    props = {name: (prop if name in required else _nullable(prop))
             for name, prop in out.get("properties", {}).items() if name not in drop}
    out["properties"] = props
    if required:
        out["required"] = required
    else:
        out.pop("required", None)
    return out


def _path_parameter(name: str, prop: dict[str, Any]) -> dict[str, Any]:
    schema = _without_null(prop)
    schema.pop("default", None)
    if schema.get("type") == "string" and "minLength" not in schema:
        schema = {**schema, "minLength": 1}  # an empty segment reaches another route
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _links(location: str, registry: ActionRegistry) -> dict[str, Any]:
    """OpenAPI links from a result with a Location template to the operations on that path,
    their path parameters taken from the result's body (stateful testing follows them)."""
    links: dict[str, Any] = {}
    for other in registry:
        if other.route is None or _openapi_path(other.route.path) != location:
            continue
        params = {name: f"$response.body#/{name}" for name in _path_names(other.route.path)}
        links[other.name[:1].upper() + other.name[1:]] = {"operationId": other.name,
                                                          "parameters": params}
    return links


_READ_LINK = {"ReadRequest": {"operationId": READ_REQUEST,
                              "parameters": {"request_id": "$response.body#/request_id"},
                              "description": "the request's record"}}


def _operation(action: Action, refs: dict[Any, Any], schemas: dict[str, Any],
               policy: RolesPolicy | None, registry: ActionRegistry) -> dict[str, Any]:
    route = action.route
    assert route is not None
    doc = (action.summary or action.handler.__doc__ or action.name).strip()
    name = action.params.__name__
    params_schema = schemas[name]
    props: dict[str, Any] = params_schema.get("properties", {})
    required = set(params_schema.get("required", []))
    in_path = _path_names(route.path)
    parameters: list[dict[str, Any]] = [
        _path_parameter(p, props.get(p, {"type": "string"})) for p in in_path]
    needs = sorted(policy.required(action.name)) if policy is not None else list(action.roles)
    description = doc + (f"\n\nNeeds the roles: {', '.join(needs)}." if needs else "")
    op: dict[str, Any] = {"operationId": action.name, "summary": doc.splitlines()[0],
                          "description": description, "security": SECURITY,
                          "tags": ["actions"], "x-roles": needs}
    if route.takes_body:
        body_name = name
        if in_path:
            body_name = f"{name}Body"
            body = _params_schema(params_schema, in_path)
            body["title"] = body_name
            body["description"] = (f"{name} without {', '.join(in_path)}, which the path "
                                   "gives (a body that repeats it is refused: 422)")
            schemas[body_name] = body
        op["requestBody"] = {"required": True, "content": _json_content(_ref(body_name))}
    else:
        for field, prop in props.items():
            if field in in_path:
                continue
            schema = _without_null(prop)
            parameters.append({"name": field, "in": "query", "required": field in required,
                               "schema": schema})
    parameters.append({
        "name": "Prefer", "in": "header", "required": False,
        "description": "`respond-async` answers 202 at once, with Location: "
                       "/requests/{request_id}; other preferences are ignored (RFC 7240).",
        "schema": {"type": "string", "examples": ["respond-async"]}})
    op["parameters"] = parameters
    rid = {"X-Request-ID": _header("X-Request-ID")}
    done: dict[str, Any] = {"description": "done",
                            "headers": {**rid, "Server-Timing": _header("Server-Timing")}}
    if route.status != 204 and action.result is not NoResult:
        schema = {} if action.result is None else refs[(action.result, "serialization")]
        done["description"] = "the action's result"
        done["content"] = _json_content(schema)
    if route.location is not None:
        done["headers"]["Location"] = _header("Location")
        links = _links(route.location, registry)
        if links:
            done["links"] = links
    responses: dict[str, Any] = {str(route.status): done}
    responses["202"] = {
        "description": "queued (with `Prefer: respond-async`); read it at Location",
        "headers": {**rid, "Location": _header("Location"),
                    "Preference-Applied": _header("Preference-Applied")},
        "content": _json_content(_ref("Accepted")), "links": _READ_LINK}
    for status, text in _ACTION_ERRORS.items():
        if status in _BODY_ONLY and not route.takes_body:
            continue
        if status == "401":
            responses[status] = _unauthorized()
        elif status == "503":
            responses[status] = _error(text, headers={"Retry-After": _header("Retry-After")})
        elif status == "504":
            responses[status] = {
                "description": text,
                "headers": {**rid, "Location": _header("Location")},
                "content": _json_content({"anyOf": [_ref("Pending"), _ref("Error")]}),
                "links": _READ_LINK}
        else:
            responses[status] = _error(text)
    op["responses"] = responses
    return op


def _plain(operation_id: str, summary: str, schema: dict[str, Any] | None = None, *,
           content_type: str = "application/json",
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "ok", "headers": {"X-Request-ID": _header(
        "X-Request-ID")}}
    if schema is not None:
        ok["content"] = {content_type: {"schema": schema}}
    return {"operationId": operation_id, "summary": summary, "security": [],
            "tags": ["service"],
            "responses": {"200": ok, **(extra or {}), "500": _error("internal error")}}


def build_document(registry: ActionRegistry,
                   policy: RolesPolicy | None = None) -> dict[str, Any]:
    routed = [a for a in registry if a.route is not None]
    models: list[tuple[type[BaseModel], Any]] = []
    for action in routed:
        models.append((action.params, "validation"))
        if isinstance(action.result, type) and issubclass(action.result, BaseModel):
            models.append((action.result, "serialization"))
    refs, top = models_json_schema(models, ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    for action in routed:
        name = action.params.__name__
        schemas[name] = _params_schema(schemas[name])
    schemas.update({"ErrorDetail": _ERROR_DETAIL, "Error": _ERROR, "Pending": _PENDING,
                    "Accepted": _ACCEPTED,
                    "Record": _RECORD, "Health": _HEALTH, "Readiness": _READINESS})
    paths: dict[str, dict[str, Any]] = {}
    for action in routed:
        assert action.route is not None
        path = _openapi_path(action.route.path)
        paths.setdefault(path, {})[action.route.method.lower()] = _operation(
            action, refs, schemas, policy, registry)
    paths["/requests/{request_id}"] = {"get": {
        "operationId": READ_REQUEST, "summary": "The result record of a request you made",
        "description": "Its progress while Running, its result or error once final. 404 if "
                       "unknown, expired, unreadable, or not yours.",
        "security": SECURITY, "tags": ["requests"],
        "parameters": [{"name": "request_id", "in": "path", "required": True,
                        "description": "as issued in a 202's or 504's body and Location",
                        "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN}}],
        "responses": {
            "200": {"description": "the record", "headers": {
                "X-Request-ID": _header("X-Request-ID")}, "content": _json_content(
                    _ref("Record"))},
            "401": _unauthorized(),
            "404": _error("unknown, expired, unreadable, or not yours"),
            "500": _error("internal error"),
            "503": _error("the store is unavailable",
                          headers={"Retry-After": _header("Retry-After")}),
        }}}
    paths["/requests/{request_id}/events"] = {"get": {
        "operationId": "requestEvents",
        "summary": "Live progress of a request you made, as Server-Sent Events",
        "description": "The record each time it changes (Queued, Running with progress, then "
                       "Success or Fail), ending after the final event. Each event: `id: <n>-"
                       "<fingerprint>`, `event: <status>`, `data: <the record as GET /requests/"
                       "{request_id} shows it>`. Resume with Last-Event-ID: what you have is not "
                       "sent again; 204 when you have the final record. A comment every 15 s of "
                       "silence; a stream lasts at most 10 x the request timeout.",
        "security": SECURITY, "tags": ["requests"],
        "parameters": [
            {"name": "request_id", "in": "path", "required": True,
             "description": "as issued in a 202's or 504's body and Location",
             "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN}},
            {"name": "Last-Event-ID", "in": "header", "required": False,
             "description": "the id of the last event you received",
             "schema": {"type": "string", "examples": ["3-9f86d081884c7d65"]}}],
        "responses": {
            "200": {"description": "text/event-stream of the record's changes",
                    "headers": {"X-Request-ID": _header("X-Request-ID")},
                    "content": {"text/event-stream": {"schema": {
                        "description": "one Server-Sent Event (comments are heartbeats)",
                        "type": "object", "required": ["data"],
                        "properties": {
                            "id": {"type": "string", "pattern": r"^[1-9][0-9]{0,8}-[0-9a-f]{16}$"},
                            "event": {"enum": ["Queued", "Running", "Success", "Fail"]},
                            "data": {"type": "string", "contentMediaType": "application/json",
                                     "contentSchema": _ref("Record")},
                            "retry": {"type": "integer"}}}}}},
            "204": {"description": "resumed after the final event: nothing more will come",
                    "headers": {"X-Request-ID": _header("X-Request-ID")}},
            "401": _unauthorized(),
            "404": _error("unknown, expired, unreadable, or not yours"),
            "500": _error("internal error"),
            "503": _error("too many streams open, the server is stopping, or the store is "
                          "unavailable", headers={"Retry-After": _header("Retry-After")}),
        }}}
    paths["/healthz"] = {"get": _plain("healthz", "Liveness: the process answers",
                                       _ref("Health"))}
    paths["/readyz"] = {"get": _plain(
        "readyz", "Readiness: broker and store answer", _ref("Readiness"),
        extra={"503": {"description": "not ready: the failing check says why",
                       "headers": {"X-Request-ID": _header("X-Request-ID")},
                       "content": _json_content(_ref("Readiness"))}})}
    paths["/metrics"] = {"get": _plain("metrics", "Prometheus text format", {"type": "string"},
                                       content_type="text/plain")}
    paths["/openapi.json"] = {"get": _plain("openapiDocument", "This document",
                                            {"type": "object"})}
    paths["/docs/openapi.json"] = {"get": _plain("docsOpenapiDocument",
                                                 "This document (for /docs)",
                                                 {"type": "object"})}
    paths["/docs"] = {"get": _plain("docsPage", "This document as one HTML page",
                                    {"type": "string"}, content_type="text/html")}
    return {
        "openapi": "3.1.0",
        "info": {"title": "reference", "version": __version__,
                 "description": "Asynchronous request/reply: REST -> RabbitMQ -> core worker "
                                "-> Redis. Every call waits for its final record and answers "
                                "as if synchronous. Every error answer is the envelope "
                                "`{\"error\": {\"code\", \"message\", \"field\"?}}`."},
        "security": SECURITY,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "headers": _HEADERS,
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "A JWT signed with the configured key; `sub` and `exp` "
                               "required, `roles` a list of strings."}},
        },
    }


def render_docs(document: dict[str, Any]) -> str:
    """The document as one self-contained HTML page (no scripts, no assets from elsewhere):
    each operation with its parameters, body and answers, then the schemas."""
    def esc(text: Any) -> str:
        return html.escape(str(text), quote=True)

    def schema_text(schema: Any) -> str:
        return esc(json.dumps(schema, indent=2, sort_keys=True))

    info = document["info"]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(info['title'])} API"
           "</title><style>body{font-family:sans-serif;max-width:60em;margin:auto;padding:1em}"
           "pre{background:#f4f4f4;padding:.5em;overflow:auto}code{background:#f4f4f4}"
           "h3{border-top:1px solid #ccc;padding-top:.5em}</style></head><body>",
           f"<h1>{esc(info['title'])} {esc(info['version'])}</h1>",
           f"<p>{esc(info.get('description', ''))}</p>",
           "<p>The machine-readable document: <a href='/openapi.json'>/openapi.json</a>"
           " (OpenAPI 3.1). Routes marked with a lock need <code>Authorization: Bearer "
           "&lt;JWT&gt;</code>.</p>"]
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            lock = " &#128274;" if op.get("security") else ""
            out.append(f"<h3><code>{esc(method.upper())} {esc(path)}</code>{lock}</h3>")
            out.append(f"<p>{esc(op.get('description') or op.get('summary', ''))}</p>")
            for param in op.get("parameters", []):
                out.append(f"<p>{esc(param['in'])} parameter <code>{esc(param['name'])}</code>"
                           f"{' (required)' if param.get('required') else ''}:</p>"
                           f"<pre>{schema_text(param.get('schema', {}))}</pre>")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                out.append(f"<p>JSON body:</p><pre>{schema_text(body['schema'])}</pre>")
            answers = ", ".join(f"{esc(code)} {esc(r.get('description', ''))}"
                                for code, r in op.get("responses", {}).items())
            out.append(f"<p>Answers: {answers}</p>")
    out.append("<h2>Schemas</h2>")
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        out.append(f"<h3 id='{esc(name)}'>{esc(name)}</h3><pre>{schema_text(schema)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)
