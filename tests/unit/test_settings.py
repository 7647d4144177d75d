"""Configuration from the environment, and the one-line errors of a bad one."""

from __future__ import annotations

import pytest

from reference.bootstrap import check_urls
from reference.errors import ConfigError
from reference.settings import Settings


def test_environment_sets_fields() -> None:
    """REFERENCE_* variables fill the settings, typed."""
    s = Settings.from_env({
        "REFERENCE_QUEUE": "q", "REFERENCE_POLL_INTERVAL_MS": "2.5",
        "REFERENCE_JWT_ALGORITHMS": "HS256, HS512", "REFERENCE_PORT": "9000",
    })
    assert (s.queue, s.poll_interval_ms, s.jwt_algorithms, s.port) == (
        "q", 2.5, ("HS256", "HS512"), 9000)


def test_flags_override_only_what_is_given() -> None:
    """replace() with None keeps the environment's value."""
    s = Settings.from_env({"REFERENCE_PORT": "9000"}).replace(port=None, host="0.0.0.0")
    assert (s.port, s.host) == (9000, "0.0.0.0")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REFERENCE_PORT": "eighty"}, "REFERENCE_PORT='eighty' is not an integer"),
        ({"REFERENCE_COMPLETION": "telepathy"}, "REFERENCE_COMPLETION must be one of"),
        ({"REFERENCE_REQUEST_TIMEOUT_S": "0"}, "request_timeout_s must be positive"),
    ],
)
def test_bad_values_are_one_line(env: dict[str, str], message: str) -> None:
    """A bad value raises ConfigError with a single readable line."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("broker", "store", "message"),
    [
        ("kafka://x", "memory://", "unknown broker URL scheme in 'kafka://x': use one of amqp://"),
        ("memory://", "mongodb://x", "unknown store URL scheme"),
        ("amqp://host:port/", "memory://", "bad broker URL"),
        ("amqp:///vhost", "memory://", "no host"),
    ],
)
def test_bad_urls_are_one_line(broker: str, store: str, message: str) -> None:
    """Unknown schemes list the known ones; malformed URLs say what is wrong."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_urls(Settings(broker_url=broker, store_url=store))
