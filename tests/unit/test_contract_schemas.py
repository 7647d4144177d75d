"""The JSON Schema files in docs/schemas/ are what the code validates with, and agree with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from reference.actions import builtin
from reference.contract import contract_schemas, drift, main
from reference.errors import PoisonMessage, ValidationFailed
from reference.messages import decode
from reference.records import MalformedRecord, ResultRecord

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
RID = "123e4567-e89b-12d3-a456-426614174000"


def _schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return loaded


def _valid(schema: dict[str, Any], value: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def test_the_files_in_the_repository_have_not_drifted() -> None:
    """Regenerating the schemas from the models gives the committed files, byte for byte
    (run `python -m reference.contract --out docs/schemas` after changing a model)."""
    assert drift(SCHEMAS) == []


def test_drift_is_detected(tmp_path: Path) -> None:
    """A stale, a missing and an extra file each show up in --check, which exits 1."""
    assert main(["--out", str(tmp_path)]) == 0
    (tmp_path / "record.schema.json").write_text("{}")
    (tmp_path / "notice.schema.json").unlink()
    (tmp_path / "old.schema.json").write_text("{}")
    assert sorted(drift(tmp_path)) == ["missing: notice.schema.json",
                                       "not generated: old.schema.json",
                                       "stale: record.schema.json"]
    assert main(["--out", str(tmp_path), "--check"]) == 1


def test_every_schema_is_valid_json_schema_2020_12() -> None:
    """Each generated schema passes the 2020-12 meta-schema."""
    for schema in contract_schemas().values():
        jsonschema.Draft202012Validator.check_schema(schema)


MESSAGES = [
    ({"action": "createUser", "params": {"name": "a", "email": "a@b.c"}, "request_id": RID},
     True),
    ({"action": "getUser", "params": {"id": 1}, "request_id": "x", "version": 1,
      "principal": {"sub": "alice", "roles": ["users:write"]}, "deadline": 1,
      "queued_at": 1.5, "unknown": "kept"}, True),
    ({"action": "", "params": {}, "request_id": RID}, False),
    ({"action": "a", "params": [], "request_id": RID}, False),
    ({"action": "a", "params": {}, "request_id": "has:colon"}, False),
    ({"action": "a", "params": {}, "request_id": "x" * 129}, False),
    ({"action": "a", "params": {}}, False),
    ({"action": "a", "params": {}, "request_id": RID, "version": "1"}, False),
    ({"action": "a", "params": {}, "request_id": RID, "deadline": 1.5}, False),
    ({"action": "a", "params": {}, "request_id": RID, "principal": {"roles": []}}, False),
    ({"action": "a", "params": {}, "request_id": RID, "queued_at": True}, False),
]


@pytest.mark.parametrize(("message", "ok"), MESSAGES)
def test_the_message_schema_and_the_worker_agree(message: dict[str, Any], ok: bool) -> None:
    """A message the schema accepts the worker decodes, and one it refuses is poison."""
    assert _valid(_schema("message.schema.json"), message) is ok
    if ok:
        assert decode(orjson.dumps(message)).request_id == message["request_id"]
    else:
        with pytest.raises(PoisonMessage):
            decode(orjson.dumps(message))


RECORDS = [
    ({"status": "Success", "detail": "d", "result": {"id": 1}, "progress": 100,
      "owner": "a", "queued_at": 1, "started_at": 2.5, "finished_at": 3}, True),
    ({"status": "Fail", "detail": "d", "error": {"code": "not_found", "message": "m",
                                                 "extra": 1}}, True),
    ({"status": "Running", "detail": "d", "progress": 50.5, "from_go": True}, True),
    ({"status": "Done", "detail": "d"}, False),
    ({"status": "Running", "detail": "d", "progress": 101}, False),
    ({"status": "Fail", "detail": "d", "error": {"message": "no code"}}, False),
    ({"status": "Fail", "detail": "d", "owner": 7}, False),
    ({"status": "Success", "detail": "d", "finished_at": "yesterday"}, False),
]


@pytest.mark.parametrize(("record", "ok"), RECORDS)
def test_the_record_schema_and_the_api_agree(record: dict[str, Any], ok: bool) -> None:
    """A record the schema accepts the API reads, and one it refuses is a bad record."""
    assert _valid(_schema("record.schema.json"), record) is ok
    if ok:
        assert ResultRecord.from_json(orjson.dumps(record)).status == record["status"]
    else:
        with pytest.raises(MalformedRecord):
            ResultRecord.from_json(orjson.dumps(record))


PARAMS = [
    ("createUser", {"name": "Ada", "email": "ada@example.com"}, True),
    ("createUser", {"name": "Ada"}, False),
    ("createUser", {"name": "Ada", "email": "ada@example.com", "x": 1}, False),
    ("getUser", {"id": 2**53 - 1}, True),
    ("getUser", {"id": 2**53}, False),
    # ({"id": 1.0}: JSON Schema counts 1.0 as an integer; the validators, as JSON's grammar
    # does, refuse a number written with a fraction. The one place they differ.)
    ("getUser", {"id": True}, False),
    ("listUsers", {}, True),
    ("listUsers", {"limit": 101}, False),
    ("runJob", {"duration_ms": 0, "steps": 1000, "fail": True}, True),
    ("runJob", {"duration_ms": 600_001}, False),
    ("runJob", {"duration_ms": 10, "fail": "yes"}, False),
    ("updateUser", {"id": 1, "name": "B"}, True),
]


@pytest.mark.parametrize(("action", "params", "ok"), PARAMS)
def test_the_params_schemas_and_the_validators_agree(action: str, params: dict[str, Any],
                                                     ok: bool) -> None:
    """Params the action's schema accepts the action accepts, and the other way round."""
    assert _valid(_schema(f"actions/{action}.params.schema.json"), params) is ok
    registry = builtin()
    if ok:
        registry.validate(action, params)
    else:
        with pytest.raises(ValidationFailed):
            registry.validate(action, params)


def test_the_notice_schema_is_the_request_id_form() -> None:
    """A notice is a request id: the schema takes a UUID and refuses a key with ':' or
    braces."""
    schema = _schema("notice.schema.json")
    assert _valid(schema, RID) and not _valid(schema, "final:{" + RID + "}")
    assert not _valid(schema, "{" + RID + "}")
