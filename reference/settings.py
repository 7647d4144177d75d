"""Configuration: environment variables (SPEC §5), with command-line flags on top."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from reference.errors import ConfigError

T = TypeVar("T")

COMPLETIONS = ("poll", "batch", "push", "reply")
QUEUE_TYPES = ("classic", "quorum")
QUORUM_LIMIT_FACTOR = 4


def check_key_prefix(prefix: str) -> str:
    """`prefix`, or ConfigError (one line) if it holds a '{' or '}'."""
    if "{" in prefix or "}" in prefix:
        raise ConfigError(f"REFERENCE_KEY_PREFIX={prefix!r} must not contain '{{' or '}}': "
                          f"braces mark a Redis Cluster hash tag in the keys built from it")
    return prefix


@dataclass(frozen=True, slots=True)
class Settings:
    broker_url: str = "memory://"
    store_url: str = "memory://"
    queue: str = "request_message"
    queue_type: str = "classic"
    delivery_limit: int = 5
    key_prefix: str = ""
    actions: str = ""  # extra actions: "module:attr,..." (besides entry points)
    jwt_secret: str | None = None
    jwt_public_key_file: str | None = None
    jwt_algorithms: tuple[str, ...] = ()
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Key rotation: more HS secrets accepted besides jwt_secret (signing uses jwt_secret), and
    # public keys from a JWKS document (a file or an https URL), chosen by the token's kid.
    jwt_previous_secrets: tuple[str, ...] = ()
    jwt_jwks_file: str | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_refresh_s: float = 300.0
    # TLS to RabbitMQ (amqps://) and Redis (rediss://): a CA file to verify the server, and a
    # client certificate and key when the server asks for one.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # Roles per action: a JSON file {"action": ["role", ...]} or inline JSON; see README.
    roles_policy: str | None = None
    request_timeout_s: float = 30.0
    poll_interval_ms: float = 5.0
    safety_poll_ms: float = 500.0
    result_ttl_s: float = 3600.0
    running_ttl_s: float = 600.0
    claim_ttl_s: float = 10.0
    max_body_bytes: int = 1024 * 1024
    client_timeout_s: float = 10.0  # a request's headers and body must arrive within this
    completion: str = "poll"
    host: str = "127.0.0.1"
    port: int = 8000
    connect_timeout_s: float = 10.0
    concurrency: int = 16
    shutdown_timeout_s: float = 10.0
    worker_metrics_port: int | None = None  # `reference worker`: serve GET /metrics on it

    def __post_init__(self) -> None:
        check_key_prefix(self.key_prefix)
        if self.completion not in COMPLETIONS:
            raise ConfigError(
                f"REFERENCE_COMPLETION must be one of {', '.join(COMPLETIONS)}, "
                f"not {self.completion!r}"
            )
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigError(
                f"REFERENCE_QUEUE_TYPE must be one of {', '.join(QUEUE_TYPES)}, "
                f"not {self.queue_type!r}"
            )
        for name in ("request_timeout_s", "poll_interval_ms", "safety_poll_ms", "result_ttl_s",
                     "claim_ttl_s", "running_ttl_s", "connect_timeout_s", "shutdown_timeout_s",
                     "jwt_jwks_refresh_s", "client_timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in ("max_body_bytes", "concurrency", "delivery_limit"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not self.queue:
            raise ConfigError("REFERENCE_QUEUE must not be empty")

    @property
    def quorum_delivery_limit(self) -> int:
        """A quorum queue's `x-delivery-limit`: a backstop above the worker's own bound, for a
        message that never gets as far as a claim; ordinary returns (outages, shutdowns,
        channel losses) must not use it up before the worker's count does."""
        return QUORUM_LIMIT_FACTOR * self.delivery_limit

    @property
    def uses_memory(self) -> bool:
        return self.broker_url.startswith("memory:") or self.store_url.startswith("memory:")

    @property
    def all_memory(self) -> bool:
        return self.broker_url.startswith("memory:") and self.store_url.startswith("memory:")

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes`; None values (flags not given) leave the field alone."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {}
        for spec in _ENV:
            raw = env.get(spec.var)
            if raw is None or raw == "":
                continue
            try:
                kwargs[spec.field] = spec.parse(raw)
            except ValueError:
                raise ConfigError(f"{spec.var}={raw!r} is not {spec.kind}") from None
        return cls(**kwargs)


@dataclass(frozen=True, slots=True)
class _Var:
    var: str
    field: str
    parse: Callable[[str], Any]
    kind: str


def _algorithms(raw: str) -> tuple[str, ...]:
    algs = tuple(a.strip() for a in raw.split(",") if a.strip())
    if not algs:
        raise ValueError(raw)
    return algs


_Parser = tuple[Callable[[str], Any], str]
_TEXT: _Parser = (str, "text")
_INT: _Parser = (int, "an integer")
_FLOAT: _Parser = (float, "a number")
_ALGORITHMS: _Parser = (_algorithms, "a comma-separated list")
_LIST: _Parser = (_algorithms, "a comma-separated list")

_ENV = tuple(
    _Var("REFERENCE_" + var, field, parse, kind)
    for var, field, (parse, kind) in [
        ("BROKER_URL", "broker_url", _TEXT),
        ("STORE_URL", "store_url", _TEXT),
        ("QUEUE", "queue", _TEXT),
        ("QUEUE_TYPE", "queue_type", _TEXT),
        ("DELIVERY_LIMIT", "delivery_limit", _INT),
        ("KEY_PREFIX", "key_prefix", _TEXT),
        ("ACTIONS", "actions", _TEXT),
        ("JWT_SECRET", "jwt_secret", _TEXT),
        ("JWT_PUBLIC_KEY_FILE", "jwt_public_key_file", _TEXT),
        ("JWT_ALGORITHMS", "jwt_algorithms", _ALGORITHMS),
        ("JWT_AUDIENCE", "jwt_audience", _TEXT),
        ("JWT_ISSUER", "jwt_issuer", _TEXT),
        ("JWT_PREVIOUS_SECRETS", "jwt_previous_secrets", _LIST),
        ("JWT_JWKS_FILE", "jwt_jwks_file", _TEXT),
        ("JWT_JWKS_URL", "jwt_jwks_url", _TEXT),
        ("JWT_JWKS_REFRESH_S", "jwt_jwks_refresh_s", _FLOAT),
        ("TLS_CA_FILE", "tls_ca_file", _TEXT),
        ("TLS_CERT_FILE", "tls_cert_file", _TEXT),
        ("TLS_KEY_FILE", "tls_key_file", _TEXT),
        ("ROLES_POLICY", "roles_policy", _TEXT),
        ("REQUEST_TIMEOUT_S", "request_timeout_s", _FLOAT),
        ("POLL_INTERVAL_MS", "poll_interval_ms", _FLOAT),
        ("SAFETY_POLL_MS", "safety_poll_ms", _FLOAT),
        ("RESULT_TTL_S", "result_ttl_s", _FLOAT),
        ("RUNNING_TTL_S", "running_ttl_s", _FLOAT),
        ("CLAIM_TTL_S", "claim_ttl_s", _FLOAT),
        ("MAX_BODY_BYTES", "max_body_bytes", _INT),
        ("CLIENT_TIMEOUT_S", "client_timeout_s", _FLOAT),
        ("COMPLETION", "completion", _TEXT),
        ("HOST", "host", _TEXT),
        ("PORT", "port", _INT),
        ("CONNECT_TIMEOUT_S", "connect_timeout_s", _FLOAT),
        ("CONCURRENCY", "concurrency", _INT),
        ("SHUTDOWN_TIMEOUT_S", "shutdown_timeout_s", _FLOAT),
        ("WORKER_METRICS_PORT", "worker_metrics_port", _INT),
    ]
)

ENV_VARS = tuple(v.var for v in _ENV)
