"""The whole pipeline in one event loop: API server, core worker(s) and in-memory brokers.

For tests and for trying the service from Python: the API is served by a real Sanic server on
a free loopback port, started once, so that multi-request journeys hit one running app.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from reference.api import create_app
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

    def token(self, sub: str = "alice", **kwargs: Any) -> str:
        assert self.services.keys is not None
        return sign_token(self.services.keys, sub=sub, audience=self.settings.jwt_audience,
                          issuer=self.settings.jwt_issuer, **kwargs)

    def auth(self, sub: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(sub)}"}

    async def add_worker(self, **settings_changes: Any) -> tuple[CoreWorker, Services]:
        """Start another worker with its own broker connection and store client."""
        svc = build(self.settings.replace(**settings_changes), memory=self.memory,
                    require_key=False)
        await svc.start()
        self.worker_services.append(svc)
        worker = svc.worker()
        await worker.start()
        self.workers.append(worker)
        return worker, svc


@contextlib.asynccontextmanager
async def running_pipeline(
    settings: Settings, *, workers: int = 1, memory: MemoryBackends | None = None
) -> AsyncIterator[Pipeline]:
    """Start services, `workers` core workers and the API server; stop all of them after."""
    memory = memory or MemoryBackends()
    services = build(settings, memory=memory)
    await services.start()
    app = create_app(settings, services=services)
    app.config.MOTD = False
    app.config.TOUCHUP = False  # touch-up rewrites Sanic classes once per process, not per app
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = await app.create_server(sock=sock, return_asyncio_server=True)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    pipeline = Pipeline(settings, services, f"http://127.0.0.1:{port}", memory=memory)
    try:
        for _ in range(workers):
            await pipeline.add_worker()
        yield pipeline
    finally:
        for worker in pipeline.workers:
            await worker.stop()
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()
        for svc in pipeline.worker_services:
            await svc.close()
        await services.close()
