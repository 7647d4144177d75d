"""The OpenAPI document tells the truth: what schemathesis (tests/schemathesis_run.py) relies on."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference.actions import ActionRegistry, builtin
from reference.api.app import _envelope_error
from reference.api.openapi import build_document
from reference.errors import ValidationFailed
from reference.fakes.pipeline import Pipeline
from reference.policy import RolesPolicy
from reference.records import ResultRecord
from tests.schemathesis_run import documented_outcome

REGISTRY: ActionRegistry = builtin()
DOC: dict[str, Any] = build_document(REGISTRY, RolesPolicy.defaults(REGISTRY))
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
OPERATIONS = [(path, method, op) for path, item in DOC["paths"].items()
              for method, op in item.items() if method in METHODS]
ACTIONS = [(path, method, op) for path, method, op in OPERATIONS
           if op.get("operationId") in REGISTRY]
BODIES = [(path, method, op) for path, method, op in ACTIONS if "requestBody" in op]
ACTION_ERRORS = {"400", "401", "403", "404", "409", "422", "500", "502", "503", "504"}


def _ids(ops: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    return [f"{method.upper()} {path}" for path, method, _ in ops]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        return _resolve(SCHEMAS[ref.rsplit("/", 1)[1]])
    return schema


def _body_schema(op: dict[str, Any]) -> dict[str, Any]:
    return _resolve(op["requestBody"]["content"]["application/json"]["schema"])


def _admits_null(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null" or any(_admits_null(b) for b in schema.get("anyOf", []))


# --- the document ---------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "method", "op"), BODIES, ids=_ids(BODIES))
def test_a_body_never_lists_the_path_parameters(path: str, method: str,
                                                op: dict[str, Any]) -> None:
    """A request body's schema names no path parameter and refuses unknown fields."""
    in_path = {p["name"] for p in op["parameters"] if p["in"] == "path"}
    body = _body_schema(op)
    assert in_path.isdisjoint(body.get("properties", {}))
    assert in_path.isdisjoint(body.get("required", []))
    assert body["additionalProperties"] is False


def test_put_users_body_is_update_user_without_id() -> None:
    """PUT /users/{id} takes id from the path and name or email from the body."""
    op = DOC["paths"]["/users/{id}"]["put"]
    body = _body_schema(op)
    assert set(body["properties"]) == {"name", "email"}
    assert [p["name"] for p in op["parameters"] if p["in"] == "path"] == ["id"]


@pytest.mark.parametrize(("path", "method", "op"), ACTIONS, ids=_ids(ACTIONS))
def test_every_action_declares_each_error_status(path: str, method: str,
                                                  op: dict[str, Any]) -> None:
    """An action's operation lists 400 to 504 (413 where it reads a body), with the envelope."""
    responses = op["responses"]
    wanted = ACTION_ERRORS | ({"413"} if "requestBody" in op else set())
    assert wanted <= set(responses)
    for status in wanted - {"504"}:
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/Error"}, status
    pending = responses["504"]["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/Error"} in pending
    assert "Location" in responses["504"]["headers"]
    assert "WWW-Authenticate" in responses["401"]["headers"]
    assert "Retry-After" in responses["503"]["headers"]


@pytest.mark.parametrize(("path", "method", "op"), OPERATIONS, ids=_ids(OPERATIONS))
def test_every_answer_declares_x_request_id_and_errors_the_envelope(
        path: str, method: str, op: dict[str, Any]) -> None:
    """Every response of every operation has X-Request-ID; every 4xx/5xx but a 504 and
    /readyz's 503 is the error envelope; 500 is listed everywhere."""
    assert "500" in op["responses"]
    for status, response in op["responses"].items():
        assert "X-Request-ID" in response["headers"], status
        if int(status) >= 400 and status != "504" and path != "/readyz":
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, status


def test_the_error_envelope() -> None:
    """Error is {"error": {"code", "message", "field"?}}, with request_id/status/detail
    optional."""
    error = SCHEMAS["Error"]
    assert error["required"] == ["error"]
    assert {"request_id", "status", "detail"} <= set(error["properties"])
    detail = _resolve(error["properties"]["error"])
    assert detail["required"] == ["code", "message"]
    assert set(detail["properties"]) == {"code", "message", "field"}


def test_the_bearer_security_scheme() -> None:
    """bearerAuth is an HTTP bearer JWT scheme, required by every action and by
    /requests/{id}, and by none of the open routes."""
    assert DOC["components"]["securitySchemes"]["bearerAuth"] == {
        **DOC["components"]["securitySchemes"]["bearerAuth"],
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for path, _, op in OPERATIONS:
        secured = path not in {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs",
                               "/docs/openapi.json"}
        assert op["security"] == ([{"bearerAuth": []}] if secured else []), path
        assert ("401" in op["responses"]) is secured, path


def test_post_users_links_to_the_user_operations() -> None:
    """The 201 of POST /users links to GET, PUT and DELETE /users/{id}, id from its body."""
    links = DOC["paths"]["/users"]["post"]["responses"]["201"]["links"]
    by_op = {link["operationId"]: link["parameters"] for link in links.values()}
    assert by_op == {name: {"id": "$response.body#/id"}
                     for name in ("getUser", "updateUser", "deleteUser")}


def test_every_link_names_an_operation_and_its_parameters() -> None:
    """Each link's operationId exists and its parameters are that operation's path
    parameters; 202 and 504 link to GET /requests/{request_id}."""
    by_id = {op["operationId"]: op for _, _, op in OPERATIONS}
    for _, _, op in OPERATIONS:
        for response in op["responses"].values():
            for link in response.get("links", {}).values():
                target = by_id[link["operationId"]]
                names = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link["parameters"]) == names
    for _, _, op in ACTIONS:
        for status in ("202", "504"):
            link = op["responses"][status]["links"]["ReadRequest"]
            assert link == {**link, "operationId": "readRequest",
                            "parameters": {"request_id": "$response.body#/request_id"}}


def test_operation_ids_are_unique() -> None:
    """Every operation has its own operationId (links need them)."""
    ids = [op["operationId"] for _, _, op in OPERATIONS]
    assert len(ids) == len(set(ids)) == len(OPERATIONS)


def test_fields_with_a_default_admit_null_and_required_ones_do_not() -> None:
    """In every params and body schema, null is allowed exactly for the fields that may be
    left out (the models read null as absent)."""
    for action in REGISTRY:
        for name in (action.params.__name__, action.params.__name__ + "Body"):
            if name not in SCHEMAS:
                continue
            schema = SCHEMAS[name]
            for field, prop in schema["properties"].items():
                assert _admits_null(prop) is (field not in schema.get("required", [])), (
                    name, field)


@pytest.mark.parametrize(("path", "method", "op"), ACTIONS, ids=_ids(ACTIONS))
def test_path_and_query_parameters_are_typed_and_bounded(path: str, method: str,
                                                         op: dict[str, Any]) -> None:
    """Each path or query parameter has a type, no null, and a bound (range, length,
    pattern or enum)."""
    for param in op["parameters"]:
        if param["in"] not in {"path", "query"}:
            continue
        schema = param["schema"]
        assert schema.get("type") in {"integer", "string", "boolean", "number"}, param
        assert not _admits_null(schema), param
        bounded = ({"maximum", "maxLength", "pattern", "enum"} & set(schema)
                   or schema["type"] == "boolean")
        assert bounded, param


def test_user_ids_are_positive_integers_up_to_2_53() -> None:
    """The id of /users/{id} is an integer from 1 to 2^53 - 1."""
    for method in ("get", "put", "delete"):
        (param,) = [p for p in DOC["paths"]["/users/{id}"][method]["parameters"]
                    if p["in"] == "path"]
        assert param["schema"] == {**param["schema"], "type": "integer", "minimum": 1,
                                   "maximum": 2**53 - 1}


def test_request_ids_are_declared_in_the_form_the_api_issues() -> None:
    """GET /requests/{request_id} declares its path parameter as a lower-case uuid4."""
    (param,) = DOC["paths"]["/requests/{request_id}"]["get"]["parameters"]
    assert param["in"] == "path" and param["required"] is True
    pattern = re.compile(param["schema"]["pattern"])
    assert pattern.search("5f0c2b3e-1a2b-4c3d-8e4f-0123456789ab")
    assert not pattern.search("5F0C2B3E-1A2B-4C3D-8E4F-0123456789AB")
    assert not pattern.search("final:{x}")


def test_schemathesis_reads_every_operation() -> None:
    """Schemathesis loads the document and every operation in it without an error."""
    schemathesis = pytest.importorskip("schemathesis")
    loaded = schemathesis.openapi.from_dict(DOC)
    labels = {result.ok().label for result in loaded.get_all_operations()}
    assert labels == {f"{m.upper()} {p}" for p, m, _ in OPERATIONS}


# --- what the document says and the validators agree (the schemas of builtin_actions) -------


def _accepted(action: str, params: dict[str, Any]) -> bool:
    try:
        REGISTRY.validate(action, params)
    except ValidationFailed:
        return False
    return True


SPACES = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
NAME_CHARS = st.one_of(st.characters(codec="utf-8"), st.sampled_from(
    SPACES + "\x1c\x1f\u180e\u200b\u200f\u202e\ufeff\U000e0001"))
NAMES = st.one_of(
    st.text(NAME_CHARS, max_size=6),
    st.text(NAME_CHARS, min_size=196, max_size=204),
    st.builds("{}{}{}".format, st.text(st.sampled_from(SPACES), max_size=3),
              st.text("ab ", min_size=197, max_size=203),
              st.text(st.sampled_from(SPACES), max_size=3)))


@settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))
@given(NAMES)
def test_the_name_pattern_is_what_the_validator_accepts(name: str) -> None:
    """A name matches the document's pattern exactly when createUser accepts it (trimmed,
    1 to 200 characters, no control or format characters)."""
    pattern = SCHEMAS["CreateUser"]["properties"]["name"]["pattern"]
    matches = re.search(pattern, name) is not None
    assert matches is _accepted("createUser", {"name": name, "email": "a@example.com"})


@pytest.mark.parametrize(("email", "ok"), [
    ("ada@example.com", True), ("Ada@Example.COM", True), ("a@b.test", False),
    ("a@x.localhost", False), ("a@b.local", False), ("a@b.invalid", False),
    ("a@b.onion", False), ("a@in-addr.arpa", False), ("a@B.TEST", False),
    ("a@test.com", True),
])
def test_the_email_schema_says_which_domains_are_refused(email: str, ok: bool) -> None:
    """The email schema is format email, at most 254 characters, and its pattern refuses
    the special-use domains the validator refuses."""
    schema = SCHEMAS["CreateUser"]["properties"]["email"]
    assert (schema["format"], schema["maxLength"]) == ("email", 254)
    assert (re.search(schema["pattern"], email) is not None) is ok
    assert _accepted("createUser", {"name": "Ada", "email": email}) is ok


@pytest.mark.parametrize(("cursor", "ok"), [
    ("0", True), ("12", True), ("9" * 16, True), ("9" * 17, False), ("", False),
    ("-1", False), ("1a", False), ("\u00b2", False), ("\uff11", False),
])
def test_the_cursor_pattern_is_what_the_validator_accepts(cursor: str, ok: bool) -> None:
    """The cursor query parameter's pattern matches exactly the cursors listUsers accepts."""
    (param,) = [p for p in DOC["paths"]["/users"]["get"]["parameters"]
                if p["name"] == "cursor"]
    assert (re.search(param["schema"]["pattern"], cursor) is not None) is ok
    assert _accepted("listUsers", {"cursor": cursor}) is ok


@pytest.mark.parametrize(("body", "ok"), [
    ({"name": "B"}, True), ({"email": "b@example.com"}, True),
    ({"name": None, "email": "b@example.com"}, True), ({}, False), ({"name": None}, False),
    ({"email": None, "name": None}, False),
])
def test_put_users_needs_name_or_email(body: dict[str, Any], ok: bool) -> None:
    """UpdateUserBody's anyOf asks for a non-null name or email, as updateUser does."""
    schema = {**_body_schema(DOC["paths"]["/users/{id}"]["put"]),
              "$defs": SCHEMAS}
    assert jsonschema.Draft202012Validator(schema).is_valid(body) is ok
    assert _accepted("updateUser", {"id": 1, **body}) is ok


# --- the server ------------------------------------------------------------------------------


def test_a_fail_record_error_is_answered_in_the_envelope() -> None:
    """A Fail record's error without a message or with a null field still answers
    {code, message, field?}, keeping what else the core wrote."""
    record = ResultRecord(status="Fail", detail="no such user (ID: 9)",
                          error={"code": "not_found", "field": None, "hint": "x"})
    assert _envelope_error(record) == {"code": "not_found", "message": "no such user (ID: 9)",
                                       "hint": "x"}
    record = ResultRecord(status="Fail", detail="d",
                          error={"code": "validation", "message": "m", "field": "name"})
    assert _envelope_error(record) == {"code": "validation", "message": "m", "field": "name"}


@pytest.mark.parametrize(("label", "code", "status", "body", "dropped"), [
    ("POST /jobs", "ST202", 422, {"error": {"code": "job_failed", "message": "m"}}, True),
    ("POST /jobs", "ST202", 422, {"error": {"code": "validation", "message": "m"}}, False),
    ("POST /jobs", "ST101", 504, {"request_id": "r", "status": "Running", "detail": "d",
                                  "error": {"code": "timeout", "message": "d"}}, True),
    ("POST /jobs", "ST101", 504, {"request_id": "r", "status": "Running", "detail": "d"}, False),
    ("POST /jobs", "ST101", 504, {"error": {"code": "deadline_exceeded"}}, False),
    ("POST /jobs", "ST101", 500, {"error": {"code": "internal"}}, False),
    ("POST /users", "ST101", 504, {"request_id": "r", "status": "Queued", "detail": "d",
                                   "error": {"code": "timeout", "message": "d"}}, False),
    ("POST /users", "ST202", 422, {"error": {"code": "job_failed"}}, False),
])
def test_the_schemathesis_run_drops_only_documented_job_outcomes(
        label: str, code: str, status: int, body: Any, dropped: bool) -> None:
    """The runner's filter drops a job_failed 422 and a pending 504 of POST /jobs, nothing
    else."""
    assert documented_outcome(label, code, status, body) is dropped


ASYNC = pytest.mark.asyncio(loop_scope="module")


def _path_methods(path: str) -> set[str]:
    methods = {m.upper() for m in DOC["paths"][path]}
    return methods | {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())


CONCRETE = {"/users/{id}": "/users/1", "/requests/{request_id}": "/requests/x"}


@ASYNC
@pytest.mark.parametrize("method", ["TRACE", "PATCH", "CONNECT", "FROB"])
@pytest.mark.parametrize("path", sorted(DOC["paths"]))
async def test_every_405_carries_allow_and_the_envelope(http: httpx.AsyncClient, path: str,
                                                        method: str) -> None:
    """A method a path does not have, known to Sanic or not, is a 405 in the envelope whose
    Allow lists the path's methods."""
    r = await http.request(method, CONCRETE.get(path, path))
    assert r.status_code == 405, r.text
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == _path_methods(path)
    assert r.json()["error"]["code"] == "method_not_allowed"


@ASYNC
@pytest.mark.parametrize(("query", "field"), [("cursor=", "cursor"), ("limit=", "limit"),
                                              ("limit=&cursor=1", "limit")])
async def test_a_blank_query_value_is_a_422(pipe: Pipeline, http: httpx.AsyncClient,
                                            query: str, field: str) -> None:
    """`?cursor=` is a value that is not a cursor (422), not an absent parameter."""
    r = await http.get(f"/users?{query}", headers=pipe.auth())
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


@ASYNC
async def test_the_served_document_is_the_built_one(pipe: Pipeline,
                                                    http: httpx.AsyncClient) -> None:
    """/openapi.json and /docs/openapi.json serve this document for the pipeline's actions."""
    expected = build_document(pipe.actions, RolesPolicy.defaults(pipe.actions))
    for path in ("/openapi.json", "/docs/openapi.json"):
        assert (await http.get(path)).json() == expected
