"""The seeded simulation: fixed seeds hold every invariant, and it fails when a fix is undone.

Each "undone" test puts back, for the length of one run, the code that an issue reported as a
bug (the old function, written out here), and shows that the simulation finds it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from pydantic import field_validator

from reference import actions, completion
from reference.adapters import redis_errors
from reference.builtin_actions import BUILTIN
from reference.errors import BrokerUnavailable, StoreUnavailable
from reference.fakes.simulation import FaultEvent, Plan, draw_plan, run_plan, run_seed
from reference.messages import decode
from reference.schemas import Params
from reference.worker import CoreWorker

FIXED_SEEDS = range(8)  # tox -e sim runs a thousand; these keep tox -e py honest and fast


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_a_fixed_seed_holds_every_invariant(seed: int) -> None:
    """A seed's workload under its faults ends with no invariant broken."""
    result = run_seed(seed)
    assert result.violations == []
    assert result.stats["http 200"] + result.stats["http 201"] > 0  # it did real work


def test_a_seed_replays_the_same_plan() -> None:
    """The same seed draws the same settings, workload and fault schedule."""
    assert draw_plan(1234) == draw_plan(1234)
    assert draw_plan(1234) != draw_plan(1235)


def _quiet_plan(seed: int, **changes: Any) -> Plan:
    return dataclasses.replace(draw_plan(seed, faulty=False), **changes)


# --- undone fixes: the simulation must find them ------------------------------------------------


async def _old_handle(self: CoreWorker, delivery: Any) -> None:
    """CoreWorker.handle before the fix: three error types caught, anything else leaks."""
    try:
        await self._handle(delivery, decode(delivery.body))
    except asyncio.CancelledError:
        await self._hand_back(delivery)
        raise
    except StoreUnavailable:
        await self._hand_back(delivery)
    except BrokerUnavailable:
        pass


class _OldListUsers(Params):
    """listUsers' check before the fix, as a validator with a bug: "²".isdigit() is true, and
    the conversion fails with an error that is not a validation failure."""

    limit: int = 20
    cursor: str | None = None

    @field_validator("cursor")
    @classmethod
    def _digits(cls, cursor: str | None) -> str | None:
        if cursor is not None and not cursor.isdigit():
            raise ValueError("is not a cursor this service gave out")
        if cursor is not None and not cursor.isascii():
            raise RuntimeError(f"invalid literal for int(): {cursor!r}")
        return cursor


def test_the_simulation_finds_a_leaked_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug 2 undone: two "²" cursors from a foreign producer leak their deliveries, and the
    simulation reports them unsettled and without a final record."""
    monkeypatch.setattr(CoreWorker, "handle", _old_handle)
    old = [dataclasses.replace(a, params=_OldListUsers) if a.name == "listUsers" else a
           for a in BUILTIN]
    monkeypatch.setattr(actions, "builtin", lambda: actions.ActionRegistry(old))
    plan = _quiet_plan(3, foreign=((1.0, "unicode_cursor"), (2.0, "unicode_cursor")))
    result = run_plan(plan)
    found = " | ".join(result.violations)
    assert "settles" in found or "unsettled" in found
    assert "foreign: unicode_cursor" in found


async def _allow_list_call(what: str, call: Any) -> Any:
    """redis_call before the fix: only the listed exception types meant 'unavailable'."""
    from redis import exceptions as redis_exceptions

    try:
        return await call
    except (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError,
            ConnectionError, OSError, TimeoutError) as exc:
        raise redis_errors.unavailable(what, exc) from exc


def _closed_transport_plan(seed: int, completion_mode: str) -> Plan:
    plan = _quiet_plan(seed)
    settings = plan.settings.replace(completion=completion_mode, request_timeout_s=5.0)
    return dataclasses.replace(
        plan, settings=settings,
        journeys=((1.0, "lifecycle", 0, 0), (1.5, "long_job", 0, 3000),
                  (2.0, "read_heavy", 0, 0)),
        faults=(FaultEvent(1.2, "store", "closed_transport", window_s=3.0),))


def _patch_every_redis_call(monkeypatch: pytest.MonkeyPatch, replacement: Any) -> None:
    import reference.adapters.redis_results
    import reference.adapters.redis_users

    for module in (redis_errors, reference.adapters.redis_results, reference.adapters.redis_users):
        monkeypatch.setattr(module, "redis_call", replacement)


def test_the_simulation_finds_unmapped_driver_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bugs 4 and 5 undone: uvloop's RuntimeError on a closed transport is not mapped, and
    the requests waiting through it are answered 500."""
    _patch_every_redis_call(monkeypatch, _allow_list_call)
    result = run_plan(_closed_transport_plan(11, "poll"))
    assert any("-> 500" in v for v in result.violations), result.violations


async def _old_keep_running(step: Any, **_: Any) -> None:
    """The batch and push loops before the fix: the first unexpected error ends them."""
    while True:
        await step()


def test_the_simulation_finds_a_dead_completion_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bugs 3 and 4 undone: an unmapped error ends the batch poller, and every later wait in
    that API ends in 504; the simulation's recovery check fails."""
    _patch_every_redis_call(monkeypatch, _allow_list_call)
    monkeypatch.setattr(completion, "keep_running", _old_keep_running)
    # A seed whose journeys wait through the fault (the plan's draws move when the seed's
    # choices change, as adding the reply completion did: seed 12 no longer waits there).
    result = run_plan(_closed_transport_plan(0, "batch"))
    assert any(v.startswith("recovery") for v in result.violations), result.violations


def test_the_fixes_pass_the_same_plans() -> None:
    """The plans that find the undone bugs run clean on the code as it is."""
    for plan in (_closed_transport_plan(11, "poll"), _closed_transport_plan(0, "batch"),
                 _quiet_plan(3, foreign=((1.0, "unicode_cursor"), (2.0, "unicode_cursor")))):
        assert run_plan(plan).violations == []


def test_a_seed_that_outlasts_its_real_time_limit_is_a_violation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Virtual time stands still while a task spins; the real-time watchdog ends such a seed
    with a violation instead of hanging the run (here a limit far below any seed's length)."""
    import reference.fakes.simulation

    monkeypatch.setattr(reference.fakes.simulation, "REAL_TIME_LIMIT_S", 0.05)
    result = run_seed(0)
    assert any(v.startswith("bounded: the seed did not end within 0.05 s") for v in
               result.violations), result.violations
