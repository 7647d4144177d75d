"""Roles per action: the policy, the API's 403 and the worker's own check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from reference.actions import builtin
from reference.cli import _redact
from reference.errors import ConfigError, Forbidden
from reference.fakes.pipeline import Pipeline, running_pipeline
from reference.messages import Principal
from reference.policy import RolesPolicy
from reference.records import FAIL, SUCCESS
from reference.settings import Settings
from tests.helpers import eventually, final_record
from tests.unit.test_worker import Rig


def test_the_default_policy_guards_the_user_writes_only() -> None:
    """By default createUser, updateUser and deleteUser need users:write; the rest nothing."""
    policy = RolesPolicy.load(None, builtin())
    needs = {a.name: policy.required(a.name) for a in builtin()}
    assert {name for name, roles in needs.items() if roles} == {
        "createUser", "updateUser", "deleteUser"}
    assert policy.all_roles == {"users:write"}


def test_a_policy_replaces_the_roles_of_the_actions_it_names(tmp_path: Path) -> None:
    """Inline JSON or a file replaces an action's roles; the others keep their defaults."""
    inline = RolesPolicy.load('{"getUser": ["users:read"], "deleteUser": ["admin"]}', builtin())
    assert inline.required("getUser") == {"users:read"}
    assert inline.required("deleteUser") == {"admin"}
    assert inline.required("createUser") == {"users:write"}
    path = tmp_path / "policy.json"
    path.write_text('{"createUser": []}')
    assert RolesPolicy.load(str(path), builtin()).required("createUser") == frozenset()


@pytest.mark.parametrize(("source", "words"), [
    ('{"noSuchAction": ["x"]}', "unknown action: noSuchAction"),
    ('{"getUser": "admin"}', "must be a list"),
    ("[1, 2]", "must be"),
    ("{not json", "not JSON"),
    ("/no/such/policy.json", "cannot read"),
])
def test_a_bad_policy_is_one_readable_config_error(source: str, words: str) -> None:
    """A policy that cannot be used stops the start with one line saying why."""
    with pytest.raises(ConfigError, match=words):
        RolesPolicy.load(source, builtin())


def test_check_needs_every_role_and_trusts_a_message_without_principal() -> None:
    """A principal lacking a role is Forbidden, naming it; no principal is a trusted
    producer."""
    policy = RolesPolicy.load('{"deleteUser": ["admin", "users:write"]}', builtin())
    with pytest.raises(Forbidden, match="needs the role admin"):
        policy.check("deleteUser", Principal("eve", ("users:write",)))
    policy.check("deleteUser", Principal("root", ("admin", "users:write", "x")))
    policy.check("deleteUser", None)


@pytest.fixture
async def pipe() -> AsyncIterator[Pipeline]:
    async with running_pipeline(Settings(jwt_secret="p" * 32, queue="roles")) as p:
        yield p


async def test_the_api_answers_403_before_publishing(pipe: Pipeline) -> None:
    """A token without users:write gets 403 forbidden for a user write, and nothing is
    queued; reads need only a valid token."""
    async with httpx.AsyncClient(base_url=pipe.base_url, timeout=10) as http:
        reader = pipe.auth("reader", roles=())
        r = await http.post("/users", json={"name": "A", "email": "a@example.com"},
                            headers=reader)
        assert r.status_code == 403
        assert r.json()["error"] == {"code": "forbidden",
                                     "message": "createUser needs the role users:write"}
        bad = await http.post("/users", content=b"not json", headers=reader)
        assert bad.status_code == 403  # 403 comes before the body is read
        assert (await http.get("/users", headers=reader)).status_code == 200
        writer = pipe.auth("writer", roles=["users:write"])
        created = await http.post("/users", json={"name": "A", "email": "a@example.com"},
                                  headers=writer)
        assert created.status_code == 201
        assert pipe.workers[0].processed == 2  # the list and the create; not the refused


async def test_the_worker_refuses_a_principal_without_the_roles(rig: Rig) -> None:
    """A message whose principal lacks users:write ends in Fail forbidden and is acked, not
    dead-lettered; the same message from a trusted producer (no principal) runs."""
    params = {"name": "Mallory", "email": "m@example.com"}
    await rig.publish("createUser", params, "r-forbidden", principal=Principal("mallory"))
    record = await final_record(rig.services.results, "r-forbidden")
    assert (record.status, record.error_code) == (FAIL, "forbidden")
    await rig.publish("createUser", params, "r-trusted", principal=None)
    assert (await final_record(rig.services.results, "r-trusted")).status == SUCCESS
    assert await eventually(rig.queue_drained)
    assert await rig.dlq() == []


def test_urls_are_printed_without_their_password() -> None:
    """serve's start-up line shows broker and store URLs with the password masked."""
    assert _redact("amqp://app:s3cret@mq:5672/vh") == "amqp://app:***@mq:5672/vh"
    assert "s3cret" not in _redact("rediss://:s3cret@cache/0")
    assert _redact("memory://") == "memory://"
