"""The OpenAPI 3.1 document, built from the action registry and the fixed routes.

Each action's params and result models appear once under `components/schemas` (pydantic's
JSON Schema, which is JSON Schema 2020-12, as OpenAPI 3.1 uses), so that what the document
shows is what the API and the worker validate with.
"""

from __future__ import annotations

import html
import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from reference import __version__
from reference.actions import Action, ActionRegistry, NoResult
from reference.policy import RolesPolicy

REF = "#/components/schemas/{model}"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "field": {"type": "string"}},
    }},
}
_RECORD = {
    "type": "object",
    "required": ["request_id", "status", "detail"],
    "properties": {
        "request_id": {"type": "string"},
        "status": {"enum": ["Queued", "Running", "Success", "Fail"]},
        "detail": {"type": "string"},
        "progress": {"type": "number", "minimum": 0, "maximum": 100},
        "result": {},
        "error": {"$ref": "#/components/schemas/Error/properties/error"},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}


def _path_names(path: str) -> list[str]:
    return [seg[1:-1].split(":")[0] for seg in path.split("/")
            if seg.startswith("<") and seg.endswith(">")]


def _openapi_path(path: str) -> str:
    return "/".join("{" + seg[1:-1].split(":")[0] + "}" if seg.startswith("<") else seg
                    for seg in path.split("/"))


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


def _operation(action: Action, refs: dict[Any, Any], schemas: dict[str, Any],
               policy: RolesPolicy | None, registry: ActionRegistry) -> dict[str, Any]:
    route = action.route
    assert route is not None
    doc = (action.summary or action.handler.__doc__ or action.name).strip()
    params_schema = schemas[action.params.__name__]
    props: dict[str, Any] = params_schema.get("properties", {})
    required = set(params_schema.get("required", []))
    in_path = _path_names(route.path)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True,
         "schema": props.get(name, {"type": "string"})} for name in in_path]
    needs = sorted(policy.required(action.name)) if policy is not None else list(action.roles)
    description = doc + (f"\n\nNeeds the roles: {', '.join(needs)}." if needs else "")
    op: dict[str, Any] = {"operationId": action.name, "summary": doc.splitlines()[0],
                          "description": description, "security": [{"bearerAuth": []}],
                          "tags": ["actions"], "x-roles": needs}
    if route.takes_body:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": refs[(action.params, "validation")]}}}
    else:
        parameters += [{"name": name, "in": "query", "required": name in required,
                        "schema": prop} for name, prop in props.items() if name not in in_path]
    if parameters:
        op["parameters"] = parameters
    responses: dict[str, Any] = {}
    if route.status == 204 or action.result is NoResult:
        responses[str(route.status)] = {"description": "done"}
    else:
        schema = {} if action.result is None else refs[(action.result, "serialization")]
        responses[str(route.status)] = {"description": "the action's result",
                                        "content": {"application/json": {"schema": schema}}}
        if route.location is not None:
            responses[str(route.status)]["headers"] = {"Location": {"schema": {
                "type": "string"}, "description": "where the new resource is"}}
            links = _links(route.location, registry)
            if links:
                responses[str(route.status)]["links"] = links
    responses["202"] = {"description": "queued (with `Prefer: respond-async`); read it at "
                                       "Location", "headers": {"Location": {"schema": {
                                           "type": "string"}}}}
    for status, text in (("400", "body is not JSON, or an unknown action"),
                         ("401", "no valid token"),
                         ("403", "the token lacks a role the action needs (forbidden)"),
                         ("404", "not found"),
                         ("409", "conflict"), ("413", "body too large"),
                         ("422", "bad params (the field is named)"),
                         ("500", "internal error"), ("502", "a result record that breaks "
                                                           "the contract (bad_record)"),
                         ("503", "broker or store unavailable"),
                         ("504", "no final result in time (or deadline_exceeded); read it "
                                 "at Location")):
        responses[status] = _error(text)
    op["responses"] = responses
    return op


def _plain(summary: str, schema: dict[str, Any] | None = None, *,
           content_type: str = "application/json", secured: bool = False,
           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "ok"}
    if schema is not None:
        ok["content"] = {content_type: {"schema": schema}}
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **(extra or {})}}
    if secured:
        op["security"] = [{"bearerAuth": []}]
    return op


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
    schemas["Error"] = _ERROR
    schemas["Record"] = _RECORD
    paths: dict[str, dict[str, Any]] = {}
    for action in routed:
        assert action.route is not None
        path = _openapi_path(action.route.path)
        paths.setdefault(path, {})[action.route.method.lower()] = _operation(
            action, refs, schemas, policy, registry)
    paths["/requests/{request_id}"] = {"get": _plain(
        "The result record of a request you made", {"$ref": REF.format(model="Record")},
        secured=True, extra={"404": _error("unknown, expired, or not yours")})}
    paths["/healthz"] = {"get": _plain("Liveness: the process answers",
                                       {"type": "object"})}
    paths["/readyz"] = {"get": _plain("Readiness: broker and store answer", {"type": "object"},
                                      extra={"503": {"description": "not ready"}})}
    paths["/metrics"] = {"get": _plain("Prometheus text format", {"type": "string"},
                                       content_type="text/plain")}
    paths["/openapi.json"] = {"get": _plain("This document", {"type": "object"})}
    return {
        "openapi": "3.1.0",
        "info": {"title": "reference", "version": __version__,
                 "description": "Asynchronous request/reply: REST -> RabbitMQ -> core worker "
                                "-> Redis. Every call waits for its final record and answers "
                                "as if synchronous."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "bearerFormat": "JWT"}},
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
