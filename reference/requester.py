"""The API's side of the core: turn a call into a queued request, then wait for its result."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reference.actions import ActionRegistry, builtin
from reference.clock import now_ms
from reference.errors import BrokerUnavailable, NotQueued, StoreUnavailable
from reference.messages import Principal, RequestMessage, encode
from reference.policy import RolesPolicy
from reference.ports import Completion, MessageBroker, ResultStore, Watch
from reference.records import FAIL, QUEUED, ResultRecord
from reference.tracing import producer_span


@dataclass(frozen=True, slots=True)
class Submitted:
    request_id: str
    watch: Watch | None = None


@dataclass(frozen=True, slots=True)
class Waited:
    request_id: str
    record: ResultRecord | None  # final, or the last seen when the wait timed out
    seen_at: float  # epoch ms when the API saw it


class Requester:
    def __init__(
        self,
        broker: MessageBroker,
        results: ResultStore,
        completion: Completion,
        *,
        queue: str,
        result_ttl_s: float,
        request_timeout_s: float,
        actions: ActionRegistry | None = None,
        policy: RolesPolicy | None = None,
    ) -> None:
        self.actions = actions if actions is not None else builtin()
        self.policy = policy if policy is not None else RolesPolicy.defaults(self.actions)
        self._broker = broker
        self._results = results
        self._completion = completion
        self._queue = queue
        self._result_ttl_s = result_ttl_s
        self.request_timeout_s = request_timeout_s

    def validate(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Check params before anything is published (raises ValidationFailed/UnknownAction)."""
        return self.actions.validate(action, params)

    async def submit(
        self,
        action: str,
        params: dict[str, Any],
        principal: Principal,
        *,
        deadline: int | None = None,
        wait: bool = True,
        trace: Mapping[str, Any] | None = None,
    ) -> Submitted:
        """Write Queued, start watching for the result (if `wait`), then publish and wait for
        the broker's confirm. `trace` holds the caller's W3C trace context (an HTTP request's
        headers): the message carries it on in its AMQP headers (`reference.tracing`); a
        waited request carries the completion's `reply_to`, if it has one.

        Raises StoreUnavailable before publishing, BrokerUnavailable if not confirmed."""
        request_id = str(uuid.uuid4())
        queued_at = now_ms()
        queued = ResultRecord(status=QUEUED, detail="queued", owner=principal.sub,
                              queued_at=queued_at, updated_at=queued_at)
        await self._results.create(request_id, queued, ttl_s=self._result_ttl_s)
        message = RequestMessage(action, params, request_id, principal=principal,
                                 deadline=deadline, queued_at=queued_at)
        # Watch before publishing, so that no notice of the result can come too early.
        watch = self._completion.watch(request_id) if wait else None
        reply_to = self._completion.reply_to if wait else None
        try:
            with producer_span(trace or {}, queue=self._queue, action=action,
                               request_id=request_id) as headers:
                await self._broker.publish(self._queue, encode(message), message_id=request_id,
                                           reply_to=reply_to, headers=headers or None)
        except BaseException as exc:
            if watch is not None:
                watch.cancel()
            if not isinstance(exc, BrokerUnavailable):
                raise
            failed = queued.evolve(status=FAIL, detail="not queued: the broker was unavailable",
                                   error={"code": "unavailable", "message": "broker unavailable"})
            # Best effort: the client gets a 503 either way. A lost confirm may still have
            # queued the message: this final record (and its marker, kept as long as any
            # other) makes the worker acknowledge it without running it.
            with contextlib.suppress(StoreUnavailable):
                await self._results.put(request_id, failed, ttl_s=self._result_ttl_s)
            raise NotQueued(str(exc), request_id=request_id) from exc
        return Submitted(request_id, watch)

    async def wait(self, submitted: Submitted, timeout_s: float | None = None) -> Waited:
        """The final record, or what was last seen when the request timeout ran out."""
        timeout = self.request_timeout_s if timeout_s is None else timeout_s
        watch = submitted.watch or self._completion.watch(submitted.request_id)
        record = await watch.result(timeout)
        return Waited(submitted.request_id, record, now_ms())

    async def read(self, request_id: str) -> ResultRecord | None:
        return await self._results.get(request_id)
