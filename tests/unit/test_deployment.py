"""What can be checked of the container files without a Docker engine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from reference.cli import _parser
from reference.settings import ENV_VARS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, object]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_has_the_stack_with_health_checks(compose: dict[str, object]) -> None:
    """RabbitMQ, Redis, API and workers, each broker with a health check the others wait on."""
    services = compose["services"]
    assert isinstance(services, dict)
    assert {"rabbitmq", "redis", "api", "worker"} <= set(services)
    for name in ("rabbitmq", "redis", "api"):
        assert "healthcheck" in services[name], name
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["rabbitmq"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    assert services["worker"]["deploy"]["replicas"] >= 2


def test_compose_commands_are_the_cli_the_tests_run(compose: dict[str, object]) -> None:
    """The API and worker commands parse with the same CLI the process tests start."""
    services = compose["services"]
    assert isinstance(services, dict)
    expected = {"api": "serve", "worker": "worker"}
    for name, subcommand in expected.items():
        command = services[name]["command"]
        assert command[0] == "reference"
        args = _parser().parse_args(command[1:])
        assert args.command == subcommand


def test_compose_sets_only_known_variables(compose: dict[str, object]) -> None:
    """Every REFERENCE_* variable the compose file sets is one the service reads."""
    services = compose["services"]
    assert isinstance(services, dict)
    env = services["api"]["environment"]
    assert set(env) <= set(ENV_VARS)


def test_dockerfile_copies_what_exists_and_runs_the_cli() -> None:
    """The Dockerfile copies existing paths and its CMD is a `reference` subcommand."""
    text = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", text, flags=re.M):
        assert (ROOT / source).exists(), source
    cmd = re.search(r'^CMD \["reference", "(\w+)"\]', text, flags=re.M)
    assert cmd is not None
    assert _parser().parse_args([cmd.group(1)]).command == "serve"
