"""The action registry: registering, loading by name, and the schema's error messages."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from reference.actions import Action, ActionRegistry, Route, builtin, load_actions
from reference.errors import ConfigError, UnknownAction, ValidationFailed
from reference.records import MalformedRecord
from tests.unit import sample_actions


def test_builtin_actions_are_the_six_of_the_contract() -> None:
    """The built-in registry holds the users CRUD and runJob, each with a route."""
    registry = builtin()
    assert sorted(a.name for a in registry) == ["createUser", "deleteUser", "getUser",
                                                "listUsers", "runJob", "updateUser"]
    assert all(a.route is not None for a in registry)


@pytest.mark.parametrize("spec", ["tests.unit.sample_actions:ECHO",
                                  "tests.unit.sample_actions:BOTH",
                                  "tests.unit.sample_actions:make_actions",
                                  "tests.unit.sample_actions:ECHO, "
                                  "tests.unit.sample_actions:SHOUT"])
def test_reference_actions_loads_an_action_a_list_or_a_factory(spec: str) -> None:
    """REFERENCE_ACTIONS names an Action, a list of them or a function returning them."""
    registry = load_actions(spec, use_entry_points=False)
    assert "createUser" in registry
    assert {"echo", "shout"} & {a.name for a in registry}


@pytest.mark.parametrize(("spec", "words"), [
    ("no_such_module_x:A", "cannot import 'no_such_module_x'"),
    ("tests.unit.sample_actions:MISSING", "has no attribute 'MISSING'"),
    ("tests.unit.sample_actions:NOT_AN_ACTION", "expected an Action"),
    ("tests.unit.sample_actions", "is not module:attribute"),
])
def test_a_bad_actions_spec_is_one_readable_error(spec: str, words: str) -> None:
    """A spec that cannot be loaded is a ConfigError that says which and why."""
    with pytest.raises(ConfigError, match=words):
        load_actions(spec, use_entry_points=False)


def test_two_actions_cannot_share_a_name_or_a_route() -> None:
    """Registering a second action under a taken name or method and path is refused."""
    registry = builtin()
    echo = sample_actions.ECHO
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register(Action("createUser", echo.params, echo.handler))
    with pytest.raises(ConfigError, match="both route POST /users"):
        registry.register(Action("other", echo.params, echo.handler, route=Route("POST", "/users")))
    with pytest.raises(ConfigError, match="unknown HTTP method"):
        registry.register(Action("odd", echo.params, echo.handler, route=Route("BREW", "/pot")))


def test_an_unknown_action_is_unknown_action() -> None:
    """Looking up a name nobody registered raises UnknownAction (400 at the API)."""
    with pytest.raises(UnknownAction):
        ActionRegistry().lookup("createUser")


@pytest.mark.parametrize(("action", "params", "field", "message"), [
    ("getUser", {}, "id", "id is required"),
    ("getUser", {"id": "1"}, "id", "id must be an integer"),
    ("getUser", {"id": True}, "id", "id must be an integer"),
    ("getUser", {"id": 0}, "id", f"id must be between 1 and {2**53 - 1}"),
    ("getUser", {"id": 10**40}, "id", f"id must be between 1 and {2**53 - 1}"),
    ("getUser", {"id": 1, "x": 1}, "x", "unknown field: x"),
    ("createUser", {"name": "  ", "email": "a@b.c"}, "name", "name must not be empty"),
    ("createUser", {"name": "a" * 201, "email": "a@b.c"}, "name",
     "name must be at most 200 characters"),
    ("createUser", {"name": "a", "email": "nope"}, "email", "email must be an email address"),
    ("createUser", {"name": "a", "email": "a@@b.c"}, "email", "email must be an email address"),
    ("createUser", {"name": "a", "email": "a@b..c"}, "email", "email must be an email address"),
    ("createUser", {"name": "a\x00b", "email": "a@b.c"}, "name",
     "name must not contain control or format characters"),
    ("createUser", {"name": "a\x1b[31m", "email": "a@b.c"}, "name",
     "name must not contain control or format characters"),
    ("createUser", {"name": "evil\u202egnp.exe", "email": "a@b.c"}, "name",
     "name must not contain control or format characters"),
    ("createUser", {"name": 5, "email": "a@b.c"}, "name", "name must be a string"),
    ("updateUser", {"id": 1}, "name", "give name or email to change"),
    ("listUsers", {"cursor": "²"}, "cursor", "cursor is not a cursor this service gave out"),
    ("listUsers", {"limit": 101}, "limit", "limit must be between 1 and 100"),
    ("runJob", {"duration_ms": 1, "fail": "yes"}, "fail", "fail must be a boolean"),
])
def test_schema_failures_name_the_field_in_plain_words(action: str, params: dict[str, Any],
                                                       field: str, message: str) -> None:
    """Each kind of bad param gives ValidationFailed with the field and a sentence about it."""
    with pytest.raises(ValidationFailed) as info:
        builtin().validate(action, params)
    assert (info.value.field, info.value.message) == (field, message)


def test_validation_normalises_what_is_published() -> None:
    """Strings are trimmed, emails lower-cased, null means absent and defaults are filled."""
    registry = builtin()
    assert registry.validate("createUser", {"name": " Ada ", "email": "ADA@X.ORG"}) == {
        "name": "Ada", "email": "ada@x.org"}
    assert registry.validate("runJob", {"duration_ms": 5, "steps": None}) == {
        "duration_ms": 5, "steps": 10, "fail": False}
    assert registry.validate("listUsers", {"cursor": "007"}) == {"limit": 20, "cursor": "7"}


@pytest.mark.parametrize(("action", "result"), [
    ("createUser", {"name": "a", "email": "b"}),
    ("createUser", {"id": True, "name": "a", "email": "b"}),
    ("listUsers", {"items": [{"id": 1}]}),
    ("deleteUser", {"id": 1}),
    ("runJob", {"duration_ms": 1}),
])
def test_a_result_that_breaks_the_actions_result_model_is_malformed(action: str,
                                                                    result: Any) -> None:
    """A Success result without what the action promises is a MalformedRecord (502)."""
    with pytest.raises(MalformedRecord):
        builtin().lookup(action).check_result(result)


def test_a_result_may_carry_fields_it_does_not_declare() -> None:
    """A core in another language may add fields to a result; they are not an error."""
    builtin().lookup("createUser").check_result({"id": 1, "name": "a", "email": "b",
                                                 "created_by": "cpp-core"})


def test_a_bad_reference_actions_stops_the_worker_in_one_line() -> None:
    """`reference worker` with REFERENCE_ACTIONS naming a missing module exits 2 with one line."""
    env = {"REFERENCE_ACTIONS": "no_such_module_x:A", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "reference", "worker"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no_such_module_x" in lines[0] and "Traceback" not in proc.stderr
