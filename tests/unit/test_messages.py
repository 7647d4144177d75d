"""The request message and result record wire formats."""

from __future__ import annotations

import orjson
import pytest

from reference.errors import PoisonMessage
from reference.messages import Principal, RequestMessage, decode, encode
from reference.records import MalformedRecord, ResultRecord


def test_message_round_trips() -> None:
    """encode then decode gives back the same message, optional fields included."""
    message = RequestMessage("createUser", {"name": "Hong"}, "r1", principal=Principal("a", ("x",)),
                             deadline=123)
    assert decode(encode(message)) == message


def test_minimal_message_of_the_original_design_decodes() -> None:
    """{action, params, request_id} alone is a complete message, version 1."""
    body = b'{"action":"getUser","params":{"id":1},"request_id":"r"}'
    message = decode(body)
    assert (message.action, message.params, message.version, message.principal) == (
        "getUser", {"id": 1}, 1, None)
    assert orjson.loads(encode(message)) == orjson.loads(body)


@pytest.mark.parametrize(
    ("body", "reason", "request_id"),
    [
        (b"not json", "not JSON", None),
        (b"[1,2]", "not a JSON object", None),
        (b'{"action":"a","params":{}}', "request_id", None),
        (b'{"params":{},"request_id":"r"}', "action", "r"),
        (b'{"action":"a","params":[],"request_id":"r"}', "params", "r"),
        (b'{"action":"a","params":{},"request_id":"r","version":"2"}', "version", "r"),
        (b'{"action":"a","params":{},"request_id":"r","deadline":1.5}', "deadline", "r"),
        (b'{"action":"a","params":{},"request_id":"r","principal":{"roles":[]}}', "principal", "r"),
    ],
)
def test_poison_messages_name_their_fault(body: bytes, reason: str, request_id: str | None) -> None:
    """Every unprocessable body raises PoisonMessage, with the request_id when it is readable."""
    with pytest.raises(PoisonMessage) as info:
        decode(body)
    assert reason in info.value.reason
    assert info.value.request_id == request_id


def test_record_keeps_fields_of_other_producers() -> None:
    """Unknown fields in a stored record survive a read and a write."""
    raw = b'{"status":"Running","detail":"","vendor":{"x":1}}'
    record = ResultRecord.from_json(raw)
    assert orjson.loads(record.to_json()) == orjson.loads(raw)


@pytest.mark.parametrize("raw", [b"nope", b"[]", b'{"detail":"x"}', b'{"status":"Done"}'])
def test_malformed_records_are_refused(raw: bytes) -> None:
    """Bytes that are not a record with a known status raise MalformedRecord."""
    with pytest.raises(MalformedRecord):
        ResultRecord.from_json(raw)


@pytest.mark.parametrize("rid", ["final:{job-2}", "starts:x", "{reference:users}:next_id",
                                 "{job-2}", "job}", "a b", "é", "x" * 129, ""])
def test_a_request_id_that_could_name_another_key_is_poison(rid: str) -> None:
    """A request id is a store key: ':' (the key families' separator), '{' and '}' (a hash
    tag's marks), spaces, non-ASCII and over 128 characters are refused, so no message can
    overwrite another request's keys."""
    body = orjson.dumps({"action": "getUser", "params": {"id": 1}, "request_id": rid})
    with pytest.raises(PoisonMessage) as refused:
        decode(body)
    assert refused.value.request_id is None  # not even a Fail record is written under it
