"""The core worker: consume request messages, run their actions, write their result records.

Per delivery (SPEC §2-§3): decode (poison -> dead-letter), check deadline, version and params,
claim the request and write Running (or skip: final already, held by a live worker, started
too often), run the action with progress, write exactly one final record, release the claim,
and only then ack. Every delivery is settled on every path: an error nobody expected writes a
Fail record and dead-letters the message, and the worker goes on.

A message with `reply_to` (the API's `reply` completion) gets a reply notice once it is
settled with its final record in Redis (written now, or found there): the request id, sent to
that address (`MessageBroker.send_reply`). It is best effort, after the settle: a reply that
fails is logged, and the API's safety sweep finds the record anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from reference import tracing
from reference.actions import Action, ActionContext, ActionRegistry, Outcome, builtin
from reference.backoff import Backoff, keep_running, stop_task
from reference.clock import now_ms
from reference.errors import (
    BrokerUnavailable,
    DeadlineExceeded,
    DomainError,
    PoisonMessage,
    ReferenceServiceError,
    StoreUnavailable,
    ValidationFailed,
)
from reference.messages import RequestMessage, decode
from reference.policy import RolesPolicy
from reference.ports import (
    DIRECT_REPLY_TO,
    Delivery,
    MessageBroker,
    ResultStore,
    Subscription,
    UserRepository,
)
from reference.records import FAIL, RUNNING, SUCCESS, ResultRecord
from reference.worker_metrics import WorkerMetrics

log = logging.getLogger(__name__)

# Why a message lands in the dead-letter queue (SPEC §2), as the worker logs it.
DEAD_LETTER_REASONS = ("poison", "delivery_limit", "internal")
# A reply notice is best effort: it may not hold the delivery's task longer than this.
REPLY_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    queue: str = "request_message"
    concurrency: int = 16
    result_ttl_s: float = 3600.0
    running_ttl_s: float = 600.0
    claim_ttl_s: float = 10.0
    shutdown_timeout_s: float = 10.0
    retry_delay_s: float = 0.5  # first pause before trying again after a store outage
    store_hold_s: float = 30.0  # how long a delivery is held through a store outage
    delivery_limit: int = 5  # times a request may be claimed afresh before it is given up


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
        actions: ActionRegistry | None = None,
        policy: RolesPolicy | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._actions = actions if actions is not None else builtin()
        self._policy = policy if policy is not None else RolesPolicy.defaults(self._actions)
        self._broker = broker
        self._results = results
        self._users = users
        self._config = config
        self.worker_id = worker_id or make_worker_id()
        self._subscription: Subscription | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: set[str] = set()  # request ids this worker holds the claim for now
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.processed = 0  # final records this worker wrote
        self.runs_started = 0  # actions this worker began to run (re-runs after a death count)
        self.dead_lettered: dict[str, int] = dict.fromkeys(DEAD_LETTER_REASONS, 0)
        self.metrics = metrics if metrics is not None else WorkerMetrics(
            frozenset(a.name for a in self._actions), dead_letter_reasons=DEAD_LETTER_REASONS,
            queue=config.queue)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def claims_held(self) -> frozenset[str]:
        return frozenset(self._running)

    async def start(self) -> None:
        await self._broker.declare_queue(self._config.queue)
        self._subscription = await self._broker.consume(
            self._config.queue, self._on_delivery, prefetch=self._config.concurrency
        )
        # Only once consuming: a start that fails leaves no task behind.
        self._renewer = asyncio.get_running_loop().create_task(
            keep_running(self._renew_claims, name=f"claim renewer {self.worker_id}",
                         backoff=Backoff(0.1, self._config.claim_ttl_s / 3)),
            name="claim-renewer")
        log.info("worker %s consuming %s", self.worker_id, self._config.queue)

    async def _on_delivery(self, delivery: Delivery) -> None:
        task = asyncio.get_running_loop().create_task(self.handle(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.metrics.in_flight.inc()
        task.add_done_callback(lambda _: self.metrics.in_flight.dec())

    async def stop(self) -> None:
        """Stop consuming, let in-flight work finish within the bound, hand back the rest."""
        self._stopping.set()
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.cancel()
            self._subscription = None
        if self._tasks:
            _, pending = await asyncio.wait(
                set(self._tasks), timeout=self._config.shutdown_timeout_s
            )
            if pending:
                log.warning("handing back %d requests still running at shutdown", len(pending))
                # stop_task cancels again if a driver swallowed the first cancellation.
                await asyncio.gather(*(stop_task(t, timeout_s=self._config.shutdown_timeout_s)
                                       for t in pending))
        await stop_task(self._renewer)
        self._renewer = None

    async def abort(self) -> None:
        """Stop at once, without a clean shutdown: what a killed process leaves behind. Used
        by simulations after the worker's connections were severed; in-flight tasks are
        cancelled and the renewer stops, so its claims expire."""
        self._stopping.set()
        tasks = [*self._tasks, *([self._renewer] if self._renewer else [])]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self._config.shutdown_timeout_s)
        self._renewer = None
        self._subscription = None

    # --- one delivery ---------------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> None:
        """Settle `delivery` whatever happens; never raises but cancellation."""
        if delivery.redelivered or delivery.delivery_count > 1:
            self.metrics.redeliveries.inc()
        try:
            step: Callable[[], Awaitable[None]]
            try:
                message = decode(delivery.body)
            except PoisonMessage as exc:
                poison = exc
                step = functools.partial(self._dead_letter, delivery, "poison", poison.reason,
                                         poison.request_id, code=ValidationFailed.code,
                                         record_first=True)
            else:
                handle = self._handle_traced if tracing.enabled() else self._handle
                step = functools.partial(handle, delivery, message)
            await self._handle_through_outages(delivery, step)
        except asyncio.CancelledError:
            await self._hand_back(delivery)
            raise
        except BrokerUnavailable as exc:
            # The settle could not be sent: the broker hands the message out again, and the
            # record tells the next worker what is left to do.
            log.warning("broker unavailable while settling a delivery: %s", exc)
        except Exception as exc:
            log.exception("unexpected error on a delivery; dead-lettering it")
            rid = _request_id_of(delivery.body)
            await self._dead_letter(delivery, "internal", f"internal error: {type(exc).__name__}",
                                    rid, code="internal")

    async def _handle_through_outages(self, delivery: Delivery,
                                      step: Callable[[], Awaitable[None]]) -> None:
        """Run `step`; through a store outage, hold the delivery and try again with backoff.

        Holding (rather than handing back at once) keeps the prefetch slot busy, so that the
        worker takes no new work while Redis is away, and spends no delivery count: a quorum
        queue would dead-letter a message returned too often. It is handed back when the
        worker stops, or after `store_hold_s`."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._config.store_hold_s
        backoff = Backoff(self._config.retry_delay_s, 5.0)
        while True:
            try:
                await step()
                return
            except StoreUnavailable as exc:
                pause = backoff.next()
                if self._stopping.is_set() or loop.time() + pause > give_up_at:
                    log.warning("store unavailable, handing the message back: %s", exc)
                    await self._hand_back(delivery)
                    return
                log.warning("store unavailable, trying again in %.1f s: %s", pause, exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._stopping.wait()

    async def _hand_back(self, delivery: Delivery) -> None:
        with contextlib.suppress(Exception):
            await delivery.reject(requeue=True)

    async def _handle_traced(self, delivery: Delivery, message: RequestMessage) -> None:
        """`_handle` in a CONSUMER span, its parent the trace context of the message."""
        with tracing.consumer_span(delivery.headers, queue=self._config.queue,
                                   action=message.action, request_id=message.request_id):
            await self._handle(delivery, message)

    async def _handle(self, delivery: Delivery, message: RequestMessage) -> None:
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
            await self._finish(rid, running, refusal, holder=None, action=message.action)
            await delivery.ack()
            await self._reply(delivery, rid)
            return
        state = await self._begin(rid, running)
        if state == "held":
            self.metrics.claims_waited.inc()
            state = await self._wait_for_holder(rid, running)
        if state == "final":
            await delivery.ack()
            await self._reply(delivery, rid)  # the first reply may have been lost with its run
            return
        if state == "stopping":  # someone else will take it
            await self._hand_back(delivery)
            return
        if state == "exhausted":
            reason = (f"given up: started {self._config.delivery_limit} times without "
                      f"finishing (the delivery limit)")
            await self._dead_letter(delivery, "delivery_limit", reason, rid, code="internal",
                                    base=running, record_first=True)
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
        await self._reply(delivery, rid)

    async def _reply(self, delivery: Delivery, rid: str) -> None:
        """Send the reply notice of a settled request whose final record is in Redis, if its
        message asked for one. Best effort: any failure is logged, never raised."""
        # getattr: a Delivery written before the port had reply_to (a test's double).
        address = getattr(delivery, "reply_to", None)
        if not address:
            return
        if not address.startswith(DIRECT_REPLY_TO + "."):
            # Only Direct Reply-To addresses: a producer's reply_to must not turn the worker
            # into a relay that publishes into any queue of the default exchange.
            log.debug("no reply notice for %s: %r is not a direct reply-to address", rid, address)
            return
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                await self._broker.send_reply(address, rid.encode(), correlation_id=rid)
        except Exception as exc:  # TimeoutError too; never a reason to fail the delivery
            log.warning("could not send the reply notice of %s: %s: %s", rid,
                        type(exc).__name__, exc)

    def _check(self, message: RequestMessage, now: float) -> tuple[Action, BaseModel]:
        """The action and its checked params; raises what refuses a message before any work
        (deadline passed, unknown version or action, bad params)."""
        if message.deadline is not None and now > message.deadline:
            late = now - message.deadline
            raise DeadlineExceeded(f"deadline passed {late:.0f} ms before the work could start")
        if message.version != 1:
            raise ValidationFailed(f"unsupported message version {message.version}",
                                   field="version")
        action = self._actions.lookup(message.action)
        self._policy.check(action.name, message.principal)
        return action, action.parse_params(message.params)

    async def _begin(self, rid: str, running: ResultRecord) -> str:
        """Claim the request and write Running, unless this worker or another live one is
        running it already ("held"), it is done ("final") or was started too often
        ("exhausted").

        The Redis claim is per worker (so that a copy handed back after a store outage can be
        taken again at once); `_running` keeps two copies apart inside one worker."""
        if rid in self._running:
            return "held"
        self._running.add(rid)
        cfg = self._config
        try:
            state = await self._results.begin(
                rid, self.worker_id, running, claim_ttl_s=cfg.claim_ttl_s,
                running_ttl_s=cfg.running_ttl_s, start_limit=cfg.delivery_limit,
                starts_ttl_s=cfg.result_ttl_s)
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
                async with asyncio.timeout(pause):
                    await self._stopping.wait()
            now = now_ms()
            state = await self._begin(rid, running.evolve(started_at=now, updated_at=now))
            if state != "held":
                return state
        return "stopping"

    async def _dead_letter(self, delivery: Delivery, why: str, reason: str, rid: str | None,
                           *, code: str, base: ResultRecord | None = None,
                           record_first: bool = False) -> None:
        """Write a Fail record (when the request id is known) and reject the message without
        requeue, so that it lands in the dead-letter queue. With `record_first`, a store
        outage raises StoreUnavailable before the message is dead-lettered (the caller holds
        it and tries again); otherwise the record is best effort."""
        if rid is not None:
            now = now_ms()
            record = (base or ResultRecord(status=FAIL, detail="")).evolve(
                status=FAIL, detail=reason, error={"code": code, "message": reason},
                progress=None, updated_at=now, finished_at=now)
            try:
                await self._results.put(rid, record, ttl_s=self._config.result_ttl_s)
            except StoreUnavailable:
                if record_first:
                    raise
                log.warning("could not write the Fail record of %s: store unavailable", rid)
            except Exception as exc:
                log.warning("could not write the Fail record of %s: %s", rid, exc)
        log.warning("dead-lettering a message (%s, request_id=%s): %s", why, rid, reason)
        self.dead_lettered[why] += 1
        self.metrics.dead_lettered.labels(why).inc()
        try:
            await delivery.reject(requeue=False)
        except Exception as exc:
            log.warning("could not dead-letter %s (the broker will hand it out again): %s",
                        rid, exc)
            return
        if rid is not None:  # its Fail record (or an earlier final one) is what the API reads
            await self._reply(delivery, rid)

    async def _run(self, message: RequestMessage, action: Action,
                   params: BaseModel, base: ResultRecord) -> None:
        cfg = self._config
        rid = message.request_id
        self.runs_started += 1

        async def report_progress(percent: int, detail: str) -> None:
            update = base.evolve(progress=percent, detail=detail, updated_at=now_ms())
            await self._results.put(rid, update, ttl_s=cfg.running_ttl_s)

        context = ActionContext(
            rid, self._users, report_progress, message.principal, message.deadline,
            self._actions.resources, logging.LoggerAdapter(log, {"request_id": rid}))
        began = time.perf_counter()
        try:
            outcome: Any = await action.run(context, params)
        except DomainError as exc:
            outcome = exc
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("action %s failed for request %s", message.action, rid)
            outcome = exc
        self.metrics.action_seconds.labels(self.metrics.action(action.name)).observe(
            time.perf_counter() - began)
        await self._finish(rid, base, outcome, holder=self.worker_id, action=action.name)

    async def _finish(self, rid: str, base: ResultRecord, outcome: Any, *,
                      holder: str | None, action: str) -> None:
        now = now_ms()
        if isinstance(outcome, Outcome):
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
            self.metrics.finished(action, final.error_code)
            log.debug("finished %s %s", rid, final.status)

    async def _renew_claims(self) -> None:
        """One pass of the worker's one claim renewer: renew every claim held now, then wait.

        A claim that could not be renewed is logged and tried again on the next pass; one
        that is no longer ours (it expired and another worker took it) is only logged, since
        the final record is written once whoever gets there first."""
        await asyncio.sleep(self._config.claim_ttl_s / 3)
        for rid in list(self._running):
            try:
                ours = await self._results.renew_claim(rid, self.worker_id,
                                                       ttl_s=self._config.claim_ttl_s)
            except ReferenceServiceError as exc:
                log.warning("could not renew the claim on %s: %s", rid, exc)
                continue
            if not ours and rid in self._running:
                log.warning("the claim on %s expired while this worker ran it", rid)


def _request_id_of(body: bytes) -> str | None:
    """The request id of a message that failed in an unexpected way, if it has a usable one."""
    try:
        return decode(body).request_id
    except Exception:
        return None
