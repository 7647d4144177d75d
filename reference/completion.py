"""Ways for the API to wait for a final record (`REFERENCE_COMPLETION`).

- `poll`: one GET per waiting request per interval, as the original design.
- `batch`: one poller per API process reads every waiting request with one MGET per tick.
- `push`: workers announce final records on a Redis channel; each API process holds one
  subscription, reads each noticed record once (the notices that arrived together with one
  MGET), and sweeps with a slow MGET as a safety net so that a lost notice costs latency,
  not a result.
- `reply`: the same, but the notice comes over RabbitMQ's Direct Reply-To: the API publishes
  with `reply_to` set, and the worker that wrote the final record sends the request id to that
  address. The notice carries only the id; Redis stays the source of truth.

Store outages are waited out, never raised: a request already published must not get a 503
that invites a duplicate retry; it gets its result, or the 504 of its timeout. The background
loops run under `keep_running`: no error of any kind ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from reference.backoff import Backoff, keep_running, stop_task
from reference.errors import StoreUnavailable
from reference.ports import (
    DIRECT_REPLY_TO,
    FinalsSubscription,
    MessageBroker,
    ResultStore,
    Subscription,
)
from reference.records import ResultRecord

log = logging.getLogger(__name__)

MAX_NOTICES_PER_READ = 256
MIN_SLEEP_S = 0.001


class PollingCompletion:
    reply_to: str | None = None

    def __init__(self, results: ResultStore, *, interval_s: float) -> None:
        self._results = results
        self._interval_s = interval_s

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def watch(self, request_id: str) -> _PollWatch:
        return _PollWatch(self, request_id)


class _PollWatch:
    def __init__(self, owner: PollingCompletion, request_id: str) -> None:
        self._owner = owner
        self._rid = request_id

    def cancel(self) -> None:
        return None

    async def result(self, timeout_s: float) -> ResultRecord | None:
        loop = asyncio.get_running_loop()  # loop time: waits are measured as sleeps are
        deadline = loop.time() + timeout_s
        last: ResultRecord | None = None
        while True:
            try:
                record = await self._owner._results.get(self._rid)
            except StoreUnavailable as exc:
                log.debug("store unavailable while waiting for %s: %s", self._rid, exc)
            except Exception:  # a waiting request ends in its result or its 504, never a 500
                log.exception("unexpected error while waiting for %s", self._rid)
            else:
                if record is not None:
                    last = record
                    if record.is_final:
                        return record
            left = deadline - loop.time()
            if left < MIN_SLEEP_S:  # a sleep shorter than the clock's grain could spin
                return last
            await asyncio.sleep(min(self._owner._interval_s, left))


class _Waiters:
    """Requests waited on by one API process, each with a future and its last record seen."""

    def __init__(self) -> None:
        self.futures: dict[str, asyncio.Future[ResultRecord]] = {}
        self.last: dict[str, ResultRecord] = {}
        self.added = asyncio.Event()

    def add(self, request_id: str) -> asyncio.Future[ResultRecord]:
        future: asyncio.Future[ResultRecord] = asyncio.get_running_loop().create_future()
        self.futures[request_id] = future
        self.added.set()
        return future

    def discard(self, request_id: str) -> None:
        future = self.futures.pop(request_id, None)
        if future is not None and not future.done():
            future.cancel()
        self.last.pop(request_id, None)

    def offer(self, request_id: str, record: ResultRecord | None) -> None:
        future = self.futures.get(request_id)
        if future is None or record is None:
            return
        self.last[request_id] = record
        if record.is_final and not future.done():
            future.set_result(record)

    def offer_many(self, ids: Sequence[str], records: Sequence[ResultRecord | None]) -> None:
        for rid, record in zip(ids, records, strict=True):
            self.offer(rid, record)

    def cancel_all(self) -> None:
        for rid in list(self.futures):
            self.discard(rid)


class _FutureWatch:
    def __init__(self, waiters: _Waiters, request_id: str) -> None:
        self._waiters = waiters
        self._rid = request_id
        self._future = waiters.add(request_id)

    def cancel(self) -> None:
        self._waiters.discard(self._rid)

    async def result(self, timeout_s: float) -> ResultRecord | None:
        try:
            async with asyncio.timeout(timeout_s):  # not wait_for: see reference.backoff
                return await asyncio.shield(self._future)
        except TimeoutError:
            return self._waiters.last.get(self._rid)
        finally:
            self.cancel()


async def _read_noticed(results: ResultStore, waiters: _Waiters, noticed: Sequence[str]) -> None:
    """Read the records of the noticed requests that are still waited on: one GET for one,
    one MGET for several. A store outage leaves them to the safety net's next sweep."""
    waited = [r for r in dict.fromkeys(noticed) if r in waiters.futures]
    if not waited:
        return
    try:
        if len(waited) == 1:
            waiters.offer(waited[0], await results.get(waited[0]))
        else:
            waiters.offer_many(waited, await results.get_many(waited))
    except StoreUnavailable as exc:
        log.debug("store unavailable while reading noticed records: %s", exc)


async def _sweep(results: ResultStore, waiters: _Waiters) -> None:
    ids = list(waiters.futures)
    if not ids:
        return
    try:
        records = await results.get_many(ids)
    except StoreUnavailable as exc:
        log.debug("store unavailable during a sweep: %s", exc)
        return
    waiters.offer_many(ids, records)


class BatchCompletion:
    """One MGET per tick for every request this process waits on."""

    reply_to: str | None = None

    def __init__(self, results: ResultStore, *, interval_s: float) -> None:
        self._results = results
        self._interval_s = interval_s
        self._waiters = _Waiters()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            keep_running(self._tick, name="batch poller"), name="batch-poller")

    async def close(self) -> None:
        await stop_task(self._task)
        self._task = None
        self._waiters.cancel_all()

    def watch(self, request_id: str) -> _FutureWatch:
        return _FutureWatch(self._waiters, request_id)

    async def _tick(self) -> None:
        if not self._waiters.futures:
            self._waiters.added.clear()
            await self._waiters.added.wait()
        await asyncio.sleep(self._interval_s)
        await _sweep(self._results, self._waiters)


async def close_quietly(subscription: FinalsSubscription | None) -> None:
    """Close a subscription that may be broken already: it is being dropped, so a failure to
    close it is nothing to report."""
    if subscription is not None:
        with contextlib.suppress(Exception):
            await subscription.close()


class _NoticedCompletion:
    """What push and reply share: futures woken by notices, each noticed record read once,
    and a slow sweep as the safety net for notices that never came."""

    reply_to: str | None = None

    def __init__(self, results: ResultStore, *, safety_interval_s: float) -> None:
        self._results = results
        self._safety_interval_s = safety_interval_s
        self._waiters = _Waiters()
        self._tasks: list[asyncio.Task[None]] = []

    def watch(self, request_id: str) -> _FutureWatch:
        return _FutureWatch(self._waiters, request_id)

    def _start_tasks(self, name: str, reader: asyncio.Task[None]) -> None:
        safety_net = asyncio.get_running_loop().create_task(
            keep_running(self._safety_net, name=f"{name} safety net"), name=f"{name}-safety-net")
        self._tasks = [reader, safety_net]

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            await stop_task(task)
        self._tasks = []

    async def _safety_net(self) -> None:
        await asyncio.sleep(self._safety_interval_s)
        await _sweep(self._results, self._waiters)


class PushCompletion(_NoticedCompletion):
    """One subscription per API process; a notice is followed by one GET of the record."""

    def __init__(self, results: ResultStore, *, safety_interval_s: float,
                 reconnect_max_s: float = 5.0) -> None:
        super().__init__(results, safety_interval_s=safety_interval_s)
        self._reconnect_max_s = reconnect_max_s
        self._subscription: FinalsSubscription | None = None

    async def start(self) -> None:
        # Subscribed before the API publishes anything: no notice can come too early.
        self._subscription = await self._results.subscribe_finals()
        listener = asyncio.get_running_loop().create_task(
            keep_running(self._listen, name="push listener", on_error=self._drop,
                         backoff=Backoff(0.1, self._reconnect_max_s)),
            name="push-listener")
        self._start_tasks("push", listener)

    async def close(self) -> None:
        await self._stop_tasks()
        await self._drop(None)
        self._waiters.cancel_all()

    async def _drop(self, _: BaseException | None) -> None:
        old, self._subscription = self._subscription, None
        await close_quietly(old)

    async def _listen(self) -> None:
        """One read of notices; (re)subscribes first when the subscription was lost."""
        if self._subscription is None:
            self._subscription = await self._results.subscribe_finals()
            log.info("finals subscription restored")
            # Notices sent while we were away are lost: read what we wait on now.
            await _sweep(self._results, self._waiters)
        rid = await self._subscription.next(1.0)
        noticed = [] if rid is None else [rid]
        # Under load notices come in bursts: take what is already there, then read all their
        # records with one MGET instead of one GET after another.
        while rid is not None and len(noticed) < MAX_NOTICES_PER_READ:
            rid = await self._subscription.next(0)
            if rid is not None:
                noticed.append(rid)
        await _read_noticed(self._results, self._waiters, noticed)


class ReplyCompletion(_NoticedCompletion):
    """RabbitMQ Direct Reply-To: each API process consumes its own reply address; a reply
    (the bare request id) is followed by one GET of the record, or one MGET for the replies
    that arrived together. A reply is lost with the API's channel or connection (its address
    dies with it; the adapter consumes again on the new channel before the next publish), or
    when the worker could not send it: the slow sweep every `safety_interval_s` covers that,
    so a lost reply costs latency, not a result."""

    reply_to: str | None = DIRECT_REPLY_TO

    def __init__(self, broker: MessageBroker, results: ResultStore, *,
                 safety_interval_s: float) -> None:
        super().__init__(results, safety_interval_s=safety_interval_s)
        self._broker = broker
        self._noticed: asyncio.Queue[str] = asyncio.Queue()
        self._subscription: Subscription | None = None
        self.replies = 0  # replies received, whether or not their request is still waited on

    async def start(self) -> None:
        # Consuming before the API publishes anything: RabbitMQ refuses a publish with
        # reply_to on a channel that does not consume its replies.
        self._subscription = await self._broker.consume_replies(self._on_reply)
        reader = asyncio.get_running_loop().create_task(
            keep_running(self._read, name="reply reader"), name="reply-reader")
        self._start_tasks("reply", reader)

    async def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):  # its channel may be gone already
                await subscription.cancel()
        await self._stop_tasks()
        self._waiters.cancel_all()

    async def _on_reply(self, body: bytes) -> None:
        """The broker's callback for each reply: note it; the reader reads the record."""
        self.replies += 1
        try:
            rid = body.decode()
        except UnicodeDecodeError:
            log.warning("ignored a reply that is not a request id: %r", body[:64])
            return
        if rid in self._waiters.futures:  # else late, or a copy's: nobody waits for it here
            self._noticed.put_nowait(rid)

    async def _read(self) -> None:
        """One read: the replies that are there (at least one), their records at once."""
        noticed = [await self._noticed.get()]
        while len(noticed) < MAX_NOTICES_PER_READ and not self._noticed.empty():
            noticed.append(self._noticed.get_nowait())
        await _read_noticed(self._results, self._waiters, noticed)
