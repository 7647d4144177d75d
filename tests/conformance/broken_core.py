"""A deliberately broken core, to show that `reference conformance core` can fail.

It is the project's own worker with one narrow change, picked by `--defect`:

- `ack-early`: every delivery is acknowledged as it arrives, before any record is written (a
  worker killed mid-job loses the message);
- `no-ttl`: every record the worker writes is made persistent (no TTL);
- `rerun`: a copy of a request that is final already runs again, and `createUser` forgets
  which request made which user (the record itself stays protected by the finality marker).

Run as the conformance runner runs a core: `python broken_core.py --defect ack-early`, with the
REFERENCE_* variables in the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import uuid
from typing import Any

from reference.bootstrap import build
from reference.ports import Delivery
from reference.settings import Settings


class SettledDelivery:
    """A delivery already acknowledged: the worker's own ack and reject do nothing."""

    def __init__(self, delivery: Delivery) -> None:
        self._delivery = delivery
        self.body = delivery.body
        self.redelivered = delivery.redelivered
        self.delivery_count = delivery.delivery_count
        self.message_id = delivery.message_id
        self.reply_to = delivery.reply_to
        self.headers = delivery.headers

    async def ack(self) -> None:
        return None

    async def reject(self, *, requeue: bool) -> None:
        return None


async def main(defect: str) -> None:
    settings = Settings.from_env()
    services = build(settings, require_key=False)
    await services.start()
    store: Any = services.results
    if defect == "no-ttl":
        for name in ("put", "finish", "begin"):
            original = getattr(store, name)

            async def persisting(rid: str, *args: Any, _original: Any = original,
                                 **kwargs: Any) -> Any:
                out = await _original(rid, *args, **kwargs)
                await store.client.persist(settings.key_prefix + rid)
                return out

            setattr(store, name, persisting)
    if defect == "rerun":
        begin, create = store.begin, services.users.create

        async def begin_even_if_final(rid: str, *args: Any, **kwargs: Any) -> str:
            state: str = await begin(rid, *args, **kwargs)
            return "started" if state == "final" else state

        async def create_anew(name: str, email: str, *, request_id: str) -> Any:
            return await create(name, email, request_id=uuid.uuid4().hex)

        store.begin = begin_even_if_final
        services.users.create = create_anew  # type: ignore[method-assign]
    worker = services.worker()
    if defect == "ack-early":
        handle = worker._on_delivery

        async def ack_first(delivery: Delivery) -> None:
            await delivery.ack()
            await handle(SettledDelivery(delivery))

        worker._on_delivery = ack_first  # type: ignore[method-assign]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start()
        print(f"broken core ({defect}) consuming {settings.queue}", flush=True)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await worker.stop()
        await services.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--defect", choices=("ack-early", "no-ttl", "rerun"), required=True)
    asyncio.run(main(parser.parse_args().defect))
