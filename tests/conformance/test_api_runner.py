"""`reference conformance api` against the project's own API: in memory (`reference serve`
with its embedded worker) and on real brokers with a separate worker; and it can fail."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from reference.conformance.api import CHECK_NAMES
from tests.conformance.conftest import clean_env, conformance
from tests.system.stack import SECRET, Stack, stack_env

AUDIENCE, ISSUER = "conformance-aud", "conformance-iss"


@pytest.fixture(scope="module")
def memory_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`reference serve` on memory:// with a known secret, an audience and an issuer."""
    stack = Stack(tmp_path_factory.mktemp("api"),
                  clean_env(REFERENCE_JWT_SECRET=SECRET, REFERENCE_JWT_AUDIENCE=AUDIENCE,
                            REFERENCE_JWT_ISSUER=ISSUER))
    try:
        stack.serve()
        yield stack
    finally:
        stack.stop()


def api_args(stack: Stack, *extra: str) -> list[str]:
    return ["api", "--url", stack.base_url, "--jwt-secret", SECRET,
            "--jwt-audience", AUDIENCE, "--jwt-issuer", ISSUER, *extra]


def test_the_project_api_passes_every_check_in_memory(memory_api: Stack, tmp_path: Path) -> None:
    """The in-memory service passes every API check; the JUnit file has one testcase each."""
    junit = tmp_path / "api.xml"
    outcome = conformance(*api_args(memory_api, "--junit-xml", str(junit)), timeout=120)
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert outcome.checks == dict.fromkeys(CHECK_NAMES, "PASS")
    assert re.fullmatch(rf"{len(CHECK_NAMES)} checks, 0 failed \(\d+\.\d s\)", outcome.summary)
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == str(len(CHECK_NAMES)) and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == list(CHECK_NAMES)


def test_the_api_runner_fails_with_the_wrong_secret(memory_api: Stack, tmp_path: Path) -> None:
    """Tokens the API cannot verify: the authenticated routes fail (exit 1), the checks of
    401s, health and docs still pass, and the JUnit file records the failures."""
    junit = tmp_path / "api.xml"
    args = ["api", "--url", memory_api.base_url, "--jwt-secret", "not-the-secret-" + "x" * 20,
            "--jwt-audience", AUDIENCE, "--jwt-issuer", ISSUER, "--junit-xml", str(junit)]
    outcome = conformance(*args, timeout=120)
    assert outcome.returncode == 1
    checks = outcome.checks
    assert checks["users.create"] == "FAIL" and "answered 401" in outcome.line("users.create")
    assert checks["auth.bad_signature"] == checks["health.readyz"] == "PASS"
    failed = [c for c in ET.parse(junit).getroot().iter("testcase")
              if c.find("failure") is not None]
    assert {c.get("name") for c in failed} == {n for n, r in checks.items() if r == "FAIL"}


def test_the_api_runner_fails_without_the_required_audience(memory_api: Stack) -> None:
    """Tokens without the `aud` and `iss` the API requires are refused, so the runner fails."""
    outcome = conformance("api", "--url", memory_api.base_url, "--jwt-secret", SECRET,
                          timeout=120)
    assert outcome.returncode == 1
    assert outcome.checks["users.create"] == "FAIL"


@pytest.mark.real
def test_the_project_api_passes_every_check_on_real_brokers(
        amqp_url: str, redis_url: str, unique: str, tmp_path: Path) -> None:
    """`reference serve` on RabbitMQ and Redis with a separate `reference worker` passes too."""
    import asyncio

    from tests.conftest import delete_queue_and_keys

    queue, prefix = f"conf-api-{unique}", f"confapi{unique}:"
    stack = Stack(tmp_path, stack_env(amqp_url, redis_url, queue, prefix))
    try:
        stack.serve()
        stack.worker("worker")
        outcome = conformance("api", "--url", stack.base_url, "--jwt-secret", SECRET,
                              timeout=120)
        assert outcome.returncode == 0, outcome.stdout + outcome.stderr
        assert outcome.checks == dict.fromkeys(CHECK_NAMES, "PASS")
    finally:
        stack.stop()
        asyncio.run(delete_queue_and_keys(queue, prefix))
