"""`reference conformance core` on real RabbitMQ and Redis: the project's own core passes every
check, deliberately broken cores fail the check that catches their defect, a core that never
answers fails within the bound, and the runner leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import aiormq
import pytest
import redis.asyncio as aioredis

from reference.conformance.core import CHECK_NAMES
from tests.conformance.conftest import BROKEN_CORE, PROJECT_CORE, Outcome, conformance

pytestmark = pytest.mark.real


def core_run(amqp_url: str, redis_url: str, *cmd: str, extra: tuple[str, ...] = ()) -> Outcome:
    return conformance("core", "--amqp-url", amqp_url, "--redis-url", redis_url, *extra,
                       "--", *cmd)


def names_of_run(outcome: Outcome) -> tuple[str, str]:
    """The queue and key prefix the run announced on its first line."""
    match = re.search(r"queue (\S+), key prefix (\S+);", outcome.stdout.splitlines()[0])
    assert match, outcome.stdout
    return match.group(1), match.group(2)


async def leftovers(amqp_url: str, redis_url: str, queue: str, prefix: str) -> list[str]:
    found: list[str] = []
    conn = await aiormq.connect(amqp_url)
    try:
        for name in (queue, queue + ".dlq"):
            channel = await conn.channel()
            try:
                await channel.queue_declare(name, passive=True)
                found.append(f"queue {name}")
            except aiormq.exceptions.ChannelNotFoundEntity:
                pass
    finally:
        await conn.close()
    client = aioredis.from_url(redis_url)
    try:
        found += [k.decode() async for k in client.scan_iter(match=prefix + "*", count=1000)]
    finally:
        await client.aclose()
    return found


def test_the_project_core_passes_every_check(amqp_url: str, redis_url: str,
                                             tmp_path: Path) -> None:
    """`reference worker` passes all checks, writes a JUnit file with one testcase per check,
    and the run deletes its queue, DLQ and keys."""
    junit = tmp_path / "core.xml"
    outcome = core_run(amqp_url, redis_url, *PROJECT_CORE, extra=("--junit-xml", str(junit)))
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert outcome.checks == dict.fromkeys(CHECK_NAMES, "PASS")
    assert re.fullmatch(rf"{len(CHECK_NAMES)} checks, 0 failed \(\d+\.\d s\)", outcome.summary)
    suite = ET.parse(junit).getroot()
    assert [c.get("name") for c in suite.iter("testcase")] == list(CHECK_NAMES)
    assert suite.get("failures") == "0"
    queue, prefix = names_of_run(outcome)
    assert asyncio.run(leftovers(amqp_url, redis_url, queue, prefix)) == []


def test_a_core_that_acks_before_its_final_record_fails_the_kill_check(
        amqp_url: str, redis_url: str) -> None:
    """A core that acknowledges each delivery on arrival loses a job whose worker is killed:
    kill.another_instance_finishes fails (and so may the delivery limit and the dead-lettering
    of poison messages), while the plain request/reply checks still pass."""
    outcome = core_run(amqp_url, redis_url, *BROKEN_CORE, "--defect", "ack-early",
                       extra=("--timeout", "5"))
    assert outcome.returncode == 1, outcome.stdout
    checks = outcome.checks
    assert checks["kill.another_instance_finishes"] == "FAIL"
    assert "after SIGKILL" in outcome.line("kill.another_instance_finishes")
    assert {n for n, r in checks.items() if r == "FAIL"} <= {
        "kill.another_instance_finishes", "kill.delivery_limit", "poison.dead_lettered"}
    assert checks["actions.createUser"] == checks["concurrency"] == "PASS"
    assert "core output" in outcome.stdout  # the tail of the core's log comes with failures
    queue, prefix = names_of_run(outcome)
    assert asyncio.run(leftovers(amqp_url, redis_url, queue, prefix)) == []


def test_a_core_that_writes_no_ttl_fails_the_ttl_check(amqp_url: str, redis_url: str) -> None:
    """A core whose records never expire fails ttl.every_key, and only that check."""
    outcome = core_run(amqp_url, redis_url, *BROKEN_CORE, "--defect", "no-ttl")
    assert outcome.returncode == 1, outcome.stdout
    failed = {n for n, r in outcome.checks.items() if r == "FAIL"}
    assert failed == {"ttl.every_key"}, outcome.stdout
    assert "have no TTL" in outcome.line("ttl.every_key")
    assert outcome.summary.startswith(f"{len(CHECK_NAMES)} checks, 1 failed")


def test_a_core_that_runs_a_redelivered_request_again_fails_the_redelivery_check(
        amqp_url: str, redis_url: str) -> None:
    """A core that runs a copy of a finished request again (and forgets which request made
    which user) fails redelivery.no_second_run, and only that check."""
    outcome = core_run(amqp_url, redis_url, *BROKEN_CORE, "--defect", "rerun")
    assert outcome.returncode == 1, outcome.stdout
    failed = {n for n, r in outcome.checks.items() if r == "FAIL"}
    assert failed == {"redelivery.no_second_run"}, outcome.stdout
    assert "ran createUser again" in outcome.line("redelivery.no_second_run")


def test_a_core_that_never_consumes_fails_within_the_bound(amqp_url: str, redis_url: str,
                                                           tmp_path: Path) -> None:
    """A core that starts but never consumes fails `startup` after --timeout, the other
    checks are reported as not run, and its processes are stopped."""
    pids = tmp_path / "pids"
    outcome = core_run(amqp_url, redis_url, "sh", "-c", f"echo $$ >> {pids}; exec sleep 600",
                       extra=("--timeout", "2"))
    assert outcome.returncode == 1
    assert "0 consumers" in outcome.line("startup")
    assert set(outcome.checks.values()) == {"FAIL"}
    assert len(outcome.checks) == len(CHECK_NAMES)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
