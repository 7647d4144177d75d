"""The conformance command line: usage errors are one line, set-up failures are checks."""

from __future__ import annotations

import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from reference.conformance.core import CHECK_NAMES
from tests.conformance.conftest import conformance


@pytest.mark.parametrize("args", [["core"], ["core", "--"], ["core", "--timeout", "3", "--"]])
def test_core_without_a_command_is_a_usage_error(args: list[str]) -> None:
    """`conformance core` with no CMD exits 2 with one `reference: error:` line."""
    outcome = conformance(*args, timeout=30)
    assert outcome.returncode == 2
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reference: error: ")
    assert "-- CMD" in lines[0]
    assert outcome.stdout == ""


def test_core_with_bad_instances_is_a_usage_error() -> None:
    """`--instances 0` is refused in one line, exit 2."""
    outcome = conformance("core", "--instances", "0", "--", "true", timeout=30)
    assert outcome.returncode == 2
    assert outcome.stderr.strip() == "reference: error: --instances must be at least 1"


def test_unreachable_servers_fail_every_check_quickly(tmp_path: Path) -> None:
    """With nothing listening at the broker and store URLs, every check fails (startup says
    why), the JUnit file still lists them all, and the exit code is 1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    junit = tmp_path / "out.xml"
    outcome = conformance("core", "--amqp-url", f"amqp://127.0.0.1:{port}/",
                          "--redis-url", f"redis://127.0.0.1:{port}/0", "--timeout", "3",
                          "--junit-xml", str(junit), "--", "true", timeout=60)
    assert outcome.returncode == 1
    assert "cannot set up" in outcome.line("startup")
    assert set(outcome.checks) == set(CHECK_NAMES)
    assert set(outcome.checks.values()) == {"FAIL"}
    assert outcome.summary.startswith(f"{len(CHECK_NAMES)} checks, {len(CHECK_NAMES)} failed")
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == str(len(CHECK_NAMES))
    assert all(c.find("failure") is not None for c in suite.iter("testcase"))


def test_api_needs_url_and_secret() -> None:
    """`conformance api` without --url or --jwt-secret is an argparse usage error (exit 2)."""
    outcome = conformance("api", timeout=30)
    assert outcome.returncode == 2
    assert "--url" in outcome.stderr
