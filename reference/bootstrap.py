"""The composition root: settings in, connected services out, shared by API and worker.

A URL scheme picks the adapter from a table of lazy import paths, so that `reference/` never
imports a driver and nothing is imported (or connected) before it is needed.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from reference.actions import ActionRegistry, builtin, load_actions
from reference.auth import JwtKeys, JwtVerifier
from reference.backoff import retry_until
from reference.completion import (
    BatchCompletion,
    PollingCompletion,
    PushCompletion,
    ReplyCompletion,
)
from reference.errors import BrokerUnavailable, ConfigError, StartupError, StoreUnavailable
from reference.policy import RolesPolicy
from reference.ports import Completion, MessageBroker, ResultStore, UserRepository
from reference.requester import Requester
from reference.settings import Settings
from reference.worker import CoreWorker, WorkerConfig

log = logging.getLogger(__name__)

BROKER_SCHEMES: dict[str, str] = {
    "memory": "reference.fakes.wiring:memory_broker",
    "amqp": "reference.adapters.rabbitmq:rabbitmq_broker",
    "amqps": "reference.adapters.rabbitmq:rabbitmq_broker",
}
STORE_SCHEMES: dict[str, str] = {
    "memory": "reference.fakes.wiring:memory_stores",
    "redis": "reference.adapters.redis_wiring:redis_stores",
    "rediss": "reference.adapters.redis_wiring:redis_stores",
    "unix": "reference.adapters.redis_wiring:redis_stores",
    "redis+cluster": "reference.adapters.redis_cluster:redis_cluster_stores",
    "rediss+cluster": "reference.adapters.redis_cluster:redis_cluster_stores",
}


def url_hosts(url: str) -> list[tuple[str, int | None]]:
    """The `host[:port]` entries of a URL's netloc, which may list several, comma-separated
    (`redis+cluster://h1:7001,h2:7002`, `amqp://user:pw@h1:5672,h2:5672/`); ValueError for
    an empty host or a port that is not a number from 1 to 65535."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    hosts: list[tuple[str, int | None]] = []
    for entry in netloc.split(","):
        parts = urlsplit("//" + entry)
        port = parts.port  # raises ValueError for a port that is not a number
        if not parts.hostname:
            raise ValueError(f"no host in {entry!r}")
        if port == 0:
            raise ValueError("port out of range 1-65535")
        hosts.append((parts.hostname, port))
    return hosts


def _factory(table: dict[str, str], url: str, what: str) -> Any:
    try:
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme in table and scheme not in ("memory", "unix"):
            url_hosts(url)
        else:
            _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"bad {what} URL {url!r}: {exc}") from None
    if scheme not in table:
        known = ", ".join(f"{s}://" for s in sorted(table))
        raise ConfigError(f"unknown {what} URL scheme in {url!r}: use one of {known}")
    if scheme != "memory" and scheme != "unix" and not parts.netloc.rpartition("@")[2]:
        raise ConfigError(f"bad {what} URL {url!r}: no host")
    module, _, name = table[scheme].partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class MemoryBackends:
    """The in-memory servers behind memory:// URLs; share one to connect several services."""

    broker: Any = None
    redis: Any = None
    faults: Any = None  # fakes.faults.Faults, made with the first memory:// service


@dataclass
class Services:
    settings: Settings
    broker: MessageBroker
    results: ResultStore
    users: UserRepository
    keys: JwtKeys | None
    memory: MemoryBackends = field(default_factory=MemoryBackends)
    actions: ActionRegistry = field(default_factory=builtin)
    policy: RolesPolicy | None = None  # None: the actions' default roles

    def __post_init__(self) -> None:
        if self.policy is None:
            self.policy = RolesPolicy.load(self.settings.roles_policy, self.actions)

    @property
    def roles(self) -> RolesPolicy:
        assert self.policy is not None
        return self.policy

    def verifier(self) -> JwtVerifier:
        if self.keys is None:
            raise ConfigError("no JWT key configured")
        return JwtVerifier(self.keys, audience=self.settings.jwt_audience,
                           issuer=self.settings.jwt_issuer)

    def completion(self) -> Completion:
        s = self.settings
        interval_s = s.poll_interval_ms / 1000
        if s.completion == "batch":
            return BatchCompletion(self.results, interval_s=interval_s)
        if s.completion == "push":
            return PushCompletion(self.results, safety_interval_s=s.safety_poll_ms / 1000)
        if s.completion == "reply":
            return ReplyCompletion(self.broker, self.results,
                                   safety_interval_s=s.safety_poll_ms / 1000)
        return PollingCompletion(self.results, interval_s=interval_s)

    def requester(self, completion: Completion) -> Requester:
        s = self.settings
        return Requester(self.broker, self.results, completion, queue=s.queue,
                         result_ttl_s=s.result_ttl_s, request_timeout_s=s.request_timeout_s,
                         actions=self.actions, policy=self.roles)

    def worker(self, *, concurrency: int | None = None, worker_id: str | None = None) -> CoreWorker:
        s = self.settings
        config = WorkerConfig(
            queue=s.queue, concurrency=concurrency or s.concurrency, result_ttl_s=s.result_ttl_s,
            running_ttl_s=s.running_ttl_s, claim_ttl_s=s.claim_ttl_s,
            shutdown_timeout_s=s.shutdown_timeout_s, delivery_limit=s.delivery_limit,
        )
        return CoreWorker(self.broker, self.results, self.users, config, worker_id=worker_id,
                          actions=self.actions, policy=self.roles)

    async def start(self) -> None:
        """Connect to broker and store (retrying up to connect_timeout), declare the queue."""

        async def connect() -> None:
            await self.broker.connect()
            await self.results.ping()
            await self.broker.declare_queue(self.settings.queue)

        try:
            await retry_until(connect, deadline_s=self.settings.connect_timeout_s,
                              retry_on=(BrokerUnavailable, StoreUnavailable),
                              what="broker and store")
        except (BrokerUnavailable, StoreUnavailable) as exc:
            raise StartupError(
                f"could not reach the broker or store within "
                f"{self.settings.connect_timeout_s:g} s: {exc}"
            ) from None

    async def close(self) -> None:
        for close in (self.broker.close, self.results.close):
            try:
                await close()
            except Exception:  # closing must not mask the reason we stop
                log.exception("error while closing")


def build(
    settings: Settings,
    *,
    memory: MemoryBackends | None = None,
    require_key: bool = True,
    actions: ActionRegistry | None = None,
    policy: RolesPolicy | None = None,
) -> Services:
    """Turn settings into (unconnected) services. Does no I/O beyond importing the actions
    (REFERENCE_ACTIONS and the `reference.actions` entry points) when none are given."""
    memory = memory or MemoryBackends()
    if actions is None:
        actions = load_actions(settings.actions)
    broker_factory = _factory(BROKER_SCHEMES, settings.broker_url, "broker")
    store_factory = _factory(STORE_SCHEMES, settings.store_url, "store")
    keys = JwtKeys.from_settings(settings) if require_key else None
    broker = broker_factory(settings, memory)
    results, users = store_factory(settings, memory)
    return Services(settings, broker, results, users, keys, memory, actions, policy)


def check_urls(settings: Settings) -> None:
    """Fail early, in one line, on a URL that can never work (and on actions that cannot
    be loaded)."""
    _factory(BROKER_SCHEMES, settings.broker_url, "broker")
    _factory(STORE_SCHEMES, settings.store_url, "store")
    RolesPolicy.load(settings.roles_policy, load_actions(settings.actions))
