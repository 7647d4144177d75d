"""The core worker: consume request messages, run their actions, write their result records.

Per delivery (SPEC §2-§3): decode (poison -> dead-letter), skip if the record is already final,
claim the request, check deadline and params, write Running, run the action with progress,
write exactly one final record, release the claim, and only then ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from reference import actions
from reference.clock import now_ms
from reference.errors import (
    BrokerUnavailable,
    DeadlineExceeded,
    DeliveryAlreadySettled,
    DomainError,
    PoisonMessage,
    StoreUnavailable,
    ValidationFailed,
)
from reference.messages import RequestMessage, decode
from reference.ports import Delivery, MessageBroker, ResultStore, Subscription, UserRepository
from reference.records import FAIL, RUNNING, SUCCESS, ResultRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    queue: str = "request_message"
    concurrency: int = 16
    result_ttl_s: float = 3600.0
    running_ttl_s: float = 600.0
    claim_ttl_s: float = 10.0
    shutdown_timeout_s: float = 10.0
    retry_delay_s: float = 0.5  # pause before handing back work that hit a store outage


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class CoreWorker:
    def __init__(
        self,
        broker: MessageBroker,
        results: ResultStore,
        users: UserRepository,
        config: WorkerConfig,
        *,
        worker_id: str | None = None,
    ) -> None:
        self._broker = broker
        self._results = results
        self._users = users
        self._config = config
        self.worker_id = worker_id or make_worker_id()
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()  # request ids this worker holds the claim for now
        self._stopping = asyncio.Event()
        self.processed = 0  # final records this worker wrote
        self.runs_started = 0  # actions this worker began to run (re-runs after a death count)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        await self._broker.declare_queue(self._config.queue)
        self._subscription = await self._broker.consume(
            self._config.queue, self._on_delivery, prefetch=self._config.concurrency
        )
        log.info("worker %s consuming %s", self.worker_id, self._config.queue)

    async def _on_delivery(self, delivery: Delivery) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Stop consuming, let in-flight work finish within the bound, hand back the rest."""
        self._stopping.set()
        if self._subscription is not None:
            with contextlib.suppress(BrokerUnavailable):
                await self._subscription.cancel()
            self._subscription = None
        if self._tasks:
            _, pending = await asyncio.wait(
                set(self._tasks), timeout=self._config.shutdown_timeout_s
            )
            for task in pending:
                task.cancel()
            if pending:
                log.warning("handing back %d requests still running at shutdown", len(pending))
                await asyncio.wait(pending, timeout=self._config.shutdown_timeout_s)

    # --- one delivery ---------------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> None:
        try:
            await self._handle(delivery)
        except asyncio.CancelledError:
            await self._hand_back(delivery)
            raise
        except StoreUnavailable as exc:
            log.warning("store unavailable, handing the message back: %s", exc)
            await asyncio.sleep(self._config.retry_delay_s)
            await self._hand_back(delivery)
        except BrokerUnavailable as exc:
            # The ack could not be sent; the broker redelivers and the record is final by now.
            log.warning("broker unavailable while settling a delivery: %s", exc)

    async def _hand_back(self, delivery: Delivery) -> None:
        with contextlib.suppress(BrokerUnavailable, DeliveryAlreadySettled):
            await delivery.reject(requeue=True)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            message = decode(delivery.body)
        except PoisonMessage as exc:
            await self._dead_letter(delivery, exc)
            return
        rid = message.request_id
        started = now_ms()
        running = ResultRecord(
            status=RUNNING, detail="running", progress=0,
            owner=message.principal.sub if message.principal else None,
            queued_at=message.queued_at, started_at=started, updated_at=started,
        )
        try:
            action, params = self._check(message, started)
        except DomainError as refusal:
            # Refused before any work: the final record, written once whoever gets here first.
            await self._finish(rid, running, refusal, holder=None)
            await delivery.ack()
            return
        state = await self._begin(rid, running)
        if state == "held":
            state = await self._wait_for_holder(rid, running)
        if state == "final":
            await delivery.ack()
            return
        if state == "stopping":  # someone else will take it
            await self._hand_back(delivery)
            return
        try:
            await self._run(message, action, params, running)
        except BaseException:
            # Handed back (shutdown or outage): let the next worker take it without waiting
            # for the claim to expire.
            with contextlib.suppress(Exception):
                await self._results.release_claim(rid, self.worker_id)
            raise
        finally:
            self._running.discard(rid)
        await delivery.ack()

    @staticmethod
    def _check(message: RequestMessage, now: float) -> tuple[actions.Action, dict[str, Any]]:
        """The action and its checked params; raises what refuses a message before any work
        (deadline passed, unknown version or action, bad params)."""
        if message.deadline is not None and now > message.deadline:
            late = now - message.deadline
            raise DeadlineExceeded(f"deadline passed {late:.0f} ms before the work could start")
        if message.version != 1:
            raise ValidationFailed(f"unsupported message version {message.version}",
                                   field="version")
        action = actions.lookup(message.action)
        return action, action.validate(message.params)

    async def _begin(self, rid: str, running: ResultRecord) -> str:
        """Claim the request and write Running, unless this worker or another live one is
        running it already ("held") or it is done ("final").

        The Redis claim is per worker (so that a copy handed back after a store outage can be
        taken again at once); `_running` keeps two copies apart inside one worker."""
        if rid in self._running:
            return "held"
        self._running.add(rid)
        try:
            state = await self._results.begin(
                rid, self.worker_id, running,
                claim_ttl_s=self._config.claim_ttl_s, running_ttl_s=self._config.running_ttl_s)
        except BaseException:
            self._running.discard(rid)
            raise
        if state != "started":
            self._running.discard(rid)
        return state

    async def _wait_for_holder(self, rid: str, running: ResultRecord) -> str:
        """Another live holder runs this request: wait until it is final ("final"), or its
        claim expires and we take over ("started"), or we are stopping ("stopping")."""
        pause = self._config.claim_ttl_s / 4
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
            now = now_ms()
            state = await self._begin(rid, running.evolve(started_at=now, updated_at=now))
            if state != "held":
                return state
        return "stopping"

    async def _dead_letter(self, delivery: Delivery, exc: PoisonMessage) -> None:
        log.warning("poison message dead-lettered (request_id=%s): %s", exc.request_id, exc.reason)
        if exc.request_id is not None:
            now = now_ms()
            record = ResultRecord(
                status=FAIL,
                detail=f"malformed message: {exc.reason}",
                error={"code": ValidationFailed.code, "message": exc.reason},
                updated_at=now,
                finished_at=now,
            )
            with contextlib.suppress(StoreUnavailable):
                await self._results.put(exc.request_id, record, ttl_s=self._config.result_ttl_s)
        await delivery.reject(requeue=False)

    async def _run(self, message: RequestMessage, action: actions.Action,
                   params: dict[str, Any], base: ResultRecord) -> None:
        cfg = self._config
        rid = message.request_id
        self.runs_started += 1

        async def report_progress(percent: int, detail: str) -> None:
            update = base.evolve(progress=percent, detail=detail, updated_at=now_ms())
            await self._results.put(rid, update, ttl_s=cfg.running_ttl_s)

        context = actions.ActionContext(rid, self._users, report_progress, message.principal)
        renewer = asyncio.get_running_loop().create_task(self._renew_claim(rid))
        try:
            outcome: Any = await action.run(context, params)
        except DomainError as exc:
            outcome = exc
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("action %s failed for request %s", message.action, rid)
            outcome = exc
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        await self._finish(rid, base, outcome, holder=self.worker_id)

    async def _finish(self, rid: str, base: ResultRecord, outcome: Any, *,
                      holder: str | None) -> None:
        now = now_ms()
        if isinstance(outcome, actions.Outcome):
            final = base.evolve(status=SUCCESS, detail=outcome.detail, result=outcome.result,
                                progress=100, updated_at=now, finished_at=now)
        elif isinstance(outcome, DomainError):
            error: dict[str, Any] = {"code": outcome.code, "message": outcome.message}
            if outcome.field:
                error["field"] = outcome.field
            final = base.evolve(status=FAIL, detail=outcome.message, error=error,
                                progress=None, updated_at=now, finished_at=now)
        else:
            final = base.evolve(status=FAIL, detail="internal error", progress=None,
                                error={"code": "internal", "message": "internal error"},
                                updated_at=now, finished_at=now)
        ttl = self._config.result_ttl_s
        if holder is None:
            written = await self._results.put(rid, final, ttl_s=ttl)
        else:
            written = await self._results.finish(rid, holder, final, ttl_s=ttl)
        if written:
            self.processed += 1
            log.debug("finished %s %s", rid, final.status)

    async def _renew_claim(self, rid: str) -> None:
        pause = self._config.claim_ttl_s / 3
        while True:
            await asyncio.sleep(pause)
            try:
                await self._results.renew_claim(rid, self.worker_id, ttl_s=self._config.claim_ttl_s)
            except StoreUnavailable as exc:
                log.warning("could not renew the claim on %s: %s", rid, exc)
