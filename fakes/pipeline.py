"""The whole pipeline in one event loop: API server, core worker(s) and in-memory brokers.

For tests and for trying the service from Python: the API is served by a real Sanic server on
a free loopback port, started once, so that multi-request journeys hit one running app. The
pytest plugin (`reference.fakes.plugin`) hands it out as the `reference_pipeline` fixture; with
real broker URLs in the settings the same code runs on RabbitMQ and Redis.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from reference.actions import Action, ActionRegistry, load_actions
from reference.api import create_app
from reference.api.protocol import BoundedHttpProtocol
from reference.auth import sign_token
from reference.bootstrap import MemoryBackends, Services, build
from reference.settings import Settings
from reference.worker import CoreWorker


@dataclass
class Pipeline:
    settings: Settings
    services: Services
    base_url: str
    workers: list[CoreWorker] = field(default_factory=list)
    memory: MemoryBackends = field(default_factory=MemoryBackends)
    worker_services: list[Services] = field(default_factory=list)
    app: Any = None  # the Sanic app: `app.ctx.completion` is how the API waits
    _client: httpx.AsyncClient | None = None

    def token(self, sub: str = "alice", roles: Sequence[str] | None = None,
              **kwargs: Any) -> str:
        """A signed JWT for `sub` with `roles`; None: every role the roles policy names, so
        that the token may call every action (keyword arguments: ttl_s)."""
        assert self.services.keys is not None
        if roles is None:
            roles = sorted(self.services.roles.all_roles)
        return sign_token(self.services.keys, sub=sub, roles=tuple(roles),
                          audience=self.settings.jwt_audience, issuer=self.settings.jwt_issuer,
                          **kwargs)

    def auth(self, sub: str = "alice", roles: Sequence[str] | None = None) -> dict[str, str]:
        """Headers that authenticate as `sub` with `roles` (None: every role the policy
        names; `()`: none)."""
        return {"Authorization": f"Bearer {self.token(sub, roles)}"}

    @property
    def client(self) -> httpx.AsyncClient:
        """An httpx client on `base_url`, closed with the pipeline."""
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.base_url,
                                             timeout=self.settings.request_timeout_s + 5)
        return self._client

    @property
    def broker(self) -> Any:
        """The API's MessageBroker (reference.ports)."""
        return self.services.broker

    @property
    def store(self) -> Any:
        """The ResultStore (reference.ports): `await store.get(request_id)` reads a record."""
        return self.services.results

    @property
    def actions(self) -> ActionRegistry:
        return self.services.actions

    @property
    def faults(self) -> Any:
        """The fault switches of the in-memory broker and store (`reference.fakes.faults`);
        None on real brokers."""
        return self.memory.faults

    async def add_worker(self, **settings_changes: Any) -> tuple[CoreWorker, Services]:
        """Start another worker with its own broker connection and store client."""
        svc = build(self.settings.replace(**settings_changes), memory=self.memory,
                    require_key=False, actions=self.services.actions)
        await svc.start()
        self.worker_services.append(svc)
        worker = svc.worker()
        await worker.start()
        self.workers.append(worker)
        return worker, svc


@contextlib.asynccontextmanager
async def running_pipeline(
    settings: Settings,
    *,
    workers: int = 1,
    memory: MemoryBackends | None = None,
    actions: list[Action] | tuple[Action, ...] | ActionRegistry = (),
) -> AsyncIterator[Pipeline]:
    """Start services, `workers` core workers and the API server; stop all of them after.
    `actions` are registered besides the built-in ones and those the settings name."""
    memory = memory or MemoryBackends()
    registry = load_actions(settings.actions)
    for action in actions:
        registry.register(action)
    services = build(settings, memory=memory, actions=registry)
    await services.start()
    app = create_app(settings, services=services)
    app.config.MOTD = False
    app.config.TOUCHUP = False  # touch-up rewrites Sanic classes once per process, not per app
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = await app.create_server(sock=sock, return_asyncio_server=True,
                                     protocol=BoundedHttpProtocol)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    pipeline = Pipeline(settings, services, f"http://127.0.0.1:{port}", memory=memory,
                        app=app)
    try:
        for _ in range(workers):
            await pipeline.add_worker()
        yield pipeline
    finally:
        if pipeline._client is not None:
            await pipeline._client.aclose()
        for worker in pipeline.workers:
            await worker.stop()
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()
        for svc in pipeline.worker_services:
            await svc.close()
        await services.close()
