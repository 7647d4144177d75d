"""Live progress: `GET /requests/{request_id}/events`, a request's record as Server-Sent Events.

The stream sends the record each time it changes: `Queued`, `Running` (with progress, once per
write that the stream sees), then the final `Success` or `Fail`, after which it ends. Each event
is

    id: <n>-<fingerprint>
    event: <status>
    data: <the record as GET /requests/{id} shows it: with request_id, without owner>

`n` counts the events of the stream (1, 2, 3, ...; a resumed stream goes on from the client's
`n`), and `fingerprint` is 16 hex digits of a BLAKE2b hash of the event's data: the id names the
record the client has, in any API process. An event is sent only when the record's fingerprint
differs from the last one sent.

Resuming (`Last-Event-ID: <n>-<fingerprint>`, as EventSource sends it on reconnecting): when the
current record has that fingerprint the client has it, so nothing is sent until the record
changes, and if it is final the answer is 204 (which tells EventSource to stop reconnecting);
otherwise the current record is sent as event n + 1. A `Last-Event-ID` not of this form is
ignored (the stream starts afresh at 1).

How changes arrive: the core publishes the request id on `<prefix>reference:updates` with each
Running write (BEGIN, PROGRESS) and on `<prefix>reference:finals` with the final record. Each
API process holds one subscription to both (`UpdatesHub`) while it has streams open (a stream
waits for it before its first read, so no notice falls in between; it is dropped after
`IDLE_UNSUBSCRIBE_S` without streams, so that a process that serves no streams reads no notices)
and sets the `changed` event of each stream open on that request; a stream then re-reads the
record with one GET (notices that come meanwhile coalesce into the next read; past a burst of
`READ_BURST` reads, a stream reads at most `READ_RATE_PER_S` times a second, so a flood of
progress costs Redis little). A lost subscription is restored with backoff, and every open
stream re-reads after the restore; a read that fails (a pooled connection that died in the
outage) is tried again after `READ_RETRY_S`, doubling; each stream also re-reads after
`SAFETY_REREAD_S` without a notice, so a lost notice (or a core that announces only finals)
costs latency, not an event. While the record has not changed the stream sends nothing; a record
that expires (or becomes unreadable) ends the stream without an event, and a reconnect then gets
404.

Bounds, per connection: a stream ends after `DURATION_FACTOR` x REFERENCE_REQUEST_TIMEOUT_S
(300 s by default; EventSource reconnects and resumes); a comment line is sent after
`HEARTBEAT_S` of silence (at most a third of Sanic's RESPONSE_TIMEOUT) so that proxies and
Sanic keep the connection; at most `MAX_STREAMS` streams per process (beyond: 503). A client
that disconnects ends its stream and releases its waiter. When the server stops, streams end
(their clients resume elsewhere).

Answers before the stream, in this order: 401 (token), 404 (a request id not in the issued
form: never read as a key), 503 (too many streams, or the server is stopping), 404 (unknown,
expired, unreadable or not yours: the owner check of GET /requests/{id}), 503 (the store is
unreachable), 204 (resumed, and the client has the final record), else 200 text/event-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Callable
from typing import Any

import orjson
from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty

from reference.backoff import Backoff, keep_running, stop_task
from reference.completion import close_quietly
from reference.errors import StoreUnavailable
from reference.ports import FinalsSubscription, ResultStore
from reference.records import ResultRecord

log = logging.getLogger(__name__)

# The bounds. Module constants, read when a hub is made (tests change them before an app starts).
MAX_STREAMS = 500  # streams open at once per API process; one more gets 503
DURATION_FACTOR = 10.0  # a stream lasts at most this x REFERENCE_REQUEST_TIMEOUT_S
HEARTBEAT_S = 15.0  # a comment after this much silence (capped at RESPONSE_TIMEOUT / 3)
SAFETY_REREAD_S = 5.0  # a stream re-reads its record after this long without a notice
READ_BURST = 10  # re-reads a stream may make back to back; then ...
READ_RATE_PER_S = 20.0  # ... this many a second at most (notices in between coalesce)
RECONNECT_MAX_S = 5.0  # the longest pause between attempts to restore the subscription
READ_RETRY_S = 0.1  # a failed read is tried again after this, doubling up to SAFETY_REREAD_S
IDLE_UNSUBSCRIBE_S = 10.0  # the subscription is dropped after this long without open streams

EVENTS_PATH = "/requests/<request_id>/events"
LAST_EVENT_ID = re.compile(r"([1-9][0-9]{0,8})-([0-9a-f]{16})")
NOT_FOUND = "no such request (unknown, expired, or not yours)"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
CONTENT_TYPE = "text/event-stream; charset=utf-8"
HEARTBEAT = b": keep-alive\n\n"
TIME_LIMIT = b": time limit of this stream; reconnect with Last-Event-ID to go on\n\n"


class _Waiter:
    """One open stream's interest in one request: `changed` is set by each notice."""

    __slots__ = ("changed", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.changed = asyncio.Event()


class UpdatesHub:
    """One subscription per API process (updates and finals channels), fanned out to the
    streams open in this process."""

    def __init__(self, results: ResultStore) -> None:
        self.results = results
        self.max_streams = MAX_STREAMS
        self.duration_factor = DURATION_FACTOR
        self.heartbeat_s = HEARTBEAT_S
        self.safety_s = SAFETY_REREAD_S
        self.read_burst = READ_BURST
        self.read_rate_per_s = READ_RATE_PER_S
        self.reconnect_max_s = RECONNECT_MAX_S
        self.read_retry_s = READ_RETRY_S
        self.idle_unsubscribe_s = IDLE_UNSUBSCRIBE_S
        self.closing = False
        self.restores = 0  # subscriptions restored after a loss
        self._open = 0
        self._waiters: dict[str, set[_Waiter]] = {}
        self._subscription: FinalsSubscription | None = None
        self._subscribing = asyncio.Lock()
        self._lost = False  # the subscription failed while streams were open
        self._idle_since: float | None = None  # when the last stream closed
        self._wanted = asyncio.Event()  # a stream opened: the listener has work
        self._task: asyncio.Task[None] | None = None

    @property
    def open_streams(self) -> int:
        return self._open

    @property
    def subscribed(self) -> bool:
        return self._subscription is not None

    async def start(self) -> None:
        """Listen in the background; the subscription is made when the first stream opens
        (`ready`), and dropped after `idle_unsubscribe_s` without streams."""
        self.closing = False
        self._task = asyncio.get_running_loop().create_task(
            keep_running(self._listen, name="updates listener", on_error=self._drop,
                         backoff=Backoff(0.1, self.reconnect_max_s)),
            name="updates-listener")

    def end_streams(self) -> None:
        """The server stops: every open stream ends, and no new one opens."""
        self.closing = True
        self._wake_all()

    async def close(self) -> None:
        self.end_streams()
        await stop_task(self._task)
        self._task = None
        await self._drop(None)

    def open(self, request_id: str) -> _Waiter | None:
        """A waiter for a new stream, or None when the process has all the streams it takes
        (or is stopping)."""
        if self.closing or self._open >= self.max_streams:
            return None
        waiter = _Waiter(request_id)
        self._waiters.setdefault(request_id, set()).add(waiter)
        self._open += 1
        self._idle_since = None
        self._wanted.set()
        return waiter

    async def ready(self) -> None:
        """Subscribed (when the store answers): a stream calls this after `open` and before
        its first read, so that every change after that read is noticed. A store that is
        away now is subscribed to by the listener later (the stream's safety re-reads cover
        the gap, as after a lost subscription)."""
        if self._subscription is not None:
            return
        try:
            await self._subscribe()
        except StoreUnavailable as exc:
            log.warning("updates subscription: %s; trying again in the background", exc)

    async def _subscribe(self) -> None:
        async with self._subscribing:
            if self._subscription is not None:
                return
            self._subscription = await self.results.subscribe_updates()
            if self._lost:  # notices sent while we were away are lost: every stream re-reads
                self._lost = False
                self.restores += 1
                log.info("updates subscription restored")
                self._wake_all()

    def release(self, waiter: _Waiter) -> None:
        group = self._waiters.get(waiter.request_id)
        if group is None or waiter not in group:
            return
        group.discard(waiter)
        self._open -= 1
        if not group:
            del self._waiters[waiter.request_id]
        if not self._waiters:
            self._idle_since = asyncio.get_running_loop().time()

    def _notify(self, request_id: str) -> None:
        for waiter in self._waiters.get(request_id, ()):
            waiter.changed.set()

    def _wake_all(self) -> None:
        for group in self._waiters.values():
            for waiter in group:
                waiter.changed.set()

    async def _drop(self, error: BaseException | None) -> None:
        old, self._subscription = self._subscription, None
        if error is not None and old is not None:
            self._lost = True
        await close_quietly(old)

    async def _listen(self) -> None:
        """One notice; (re)subscribes first when the subscription was lost. Without open
        streams: wait for one, and drop the subscription once idle long enough."""
        if not self._waiters:
            self._wanted.clear()
            if self._subscription is not None:
                idle_for = asyncio.get_running_loop().time() - (self._idle_since or 0.0)
                if self._idle_since is not None and idle_for >= self.idle_unsubscribe_s:
                    await self._drop(None)
                    return
                # Keep reading meanwhile, so notices do not pile up on the connection.
                await self._subscription.next(min(1.0, self.idle_unsubscribe_s))
                return
            self._lost = False  # nobody waits: nothing to re-read when it comes back
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wanted.wait()
            return
        if self._subscription is None:
            await self._subscribe()
        assert self._subscription is not None
        request_id = await self._subscription.next(1.0)
        if request_id is not None:
            self._notify(request_id)


RecordBody = Callable[[str, ResultRecord], dict[str, Any]]


def _owned(record: ResultRecord | None, sub: str) -> bool:
    """The owner check of GET /requests/{id}: a record with an owner, and that owner is you."""
    return record is not None and record.owner is not None and record.owner == sub


def _fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _resume_point(header: str | None) -> tuple[int, str | None]:
    """(events the client has, the fingerprint of its last record) from Last-Event-ID."""
    match = LAST_EVENT_ID.fullmatch(header.strip()) if header else None
    if match is None:
        return 0, None
    return int(match.group(1)), match.group(2)


def install_events_route(app: Sanic[Any, Any]) -> None:
    """Add `GET /requests/<request_id>/events`, and end its streams when the server stops.
    Needs `app.ctx.updates`, an `UpdatesHub` started with the app."""
    # app.py imports this module: its helpers are taken once it is loaded.
    from reference.api.app import ISSUED_REQUEST_ID, _error, _principal, _record_body

    @app.before_server_stop
    async def _end_streams(app: Sanic[Any, Any]) -> None:
        hub: UpdatesHub | None = getattr(app.ctx, "updates", None)
        if hub is not None:  # else the server would wait for each stream before stopping
            hub.end_streams()

    async def request_events(request: Request, request_id: str) -> HTTPResponse | None:
        """The request's record as Server-Sent Events each time it changes, until final."""
        principal = _principal(request)
        if not ISSUED_REQUEST_ID.fullmatch(request_id):  # never a store key of another family
            return _error(404, "not_found", NOT_FOUND)
        hub: UpdatesHub = request.app.ctx.updates
        waiter = hub.open(request_id)  # before the first read: no notice falls in between
        if waiter is None:
            why = ("the server is stopping" if hub.closing
                   else "too many event streams are open")
            return _error(503, "unavailable", f"{why}; try again later",
                          headers={"Retry-After": "1"})
        try:
            await hub.ready()  # subscribed before the first read
            record = await hub.results.get(request_id)  # StoreUnavailable: the app's 503
            if record is None or not _owned(record, principal.sub):
                return _error(404, "not_found", NOT_FOUND)
            request.ctx.request_id = request_id
            seq, have = _resume_point(request.headers.get("last-event-id"))
            stream = _Stream(request, hub, waiter, principal.sub, seq, have, _record_body)
            if record.is_final and have == _fingerprint(stream.data(record)):
                return empty(204)  # the client has the final record: nothing more will come
            await stream.run(record)
            return None
        finally:
            hub.release(waiter)

    app.add_route(request_events, EVENTS_PATH, methods=["GET"], name="request_events")


class _Stream:
    """One open stream: send the record when it changes, wait for notices, bounded."""

    def __init__(self, request: Request, hub: UpdatesHub, waiter: _Waiter, sub: str,
                 seq: int, have: str | None, record_body: RecordBody) -> None:
        self._request = request
        self._hub = hub
        self._waiter = waiter
        self._rid = waiter.request_id
        self._sub = sub
        self._seq = seq
        self._have = have
        self._record_body = record_body
        loop = asyncio.get_running_loop()
        self._loop = loop
        settings = request.app.ctx.settings
        response_timeout = float(request.app.config.RESPONSE_TIMEOUT)
        self._heartbeat_s = min(hub.heartbeat_s, response_timeout / 3)
        self._end = loop.time() + hub.duration_factor * settings.request_timeout_s
        self._quiet_since = loop.time()
        self._read_at = loop.time()
        self._tokens = float(hub.read_burst - 1)  # the first read is done
        self._retry_s: float | None = None  # after a failed read: the pause before the next

    def data(self, record: ResultRecord) -> bytes:
        """The event's data: the record as GET /requests/{id} shows it."""
        return orjson.dumps(self._record_body(self._rid, record))

    async def run(self, record: ResultRecord) -> None:
        response = await self._request.respond(headers=HEADERS, content_type=CONTENT_TYPE)
        data = self.data(record)
        if _fingerprint(data) == self._have:
            await response.send(b"", end_stream=False)  # the headers now: nothing new yet
        while True:
            fingerprint = _fingerprint(data)
            if fingerprint != self._have:
                self._seq += 1
                self._have = fingerprint
                await response.send(b"id: %d-%s\nevent: %s\ndata: %s\n\n" % (
                    self._seq, fingerprint.encode(), record.status.encode(), data),
                    end_stream=False)
                self._quiet_since = self._loop.time()
            if record.is_final:
                return  # Sanic ends the response
            reason = await self._wait(response)
            if reason != "read":
                if reason == "time limit":
                    await response.send(TIME_LIMIT, end_stream=False)
                return
            self._waiter.changed.clear()
            now = self._loop.time()
            self._tokens = self._tokens_at(now) - 1
            self._read_at = now
            try:
                new = await self._hub.results.get(self._rid)
            except Exception as exc:  # the stream goes on, and tries again soon
                if isinstance(exc, StoreUnavailable):
                    log.debug("store unavailable for the stream of %s: %s", self._rid, exc)
                else:
                    log.exception("unexpected error reading %s for its stream", self._rid)
                self._retry_s = min(self._hub.safety_s, self._hub.read_retry_s
                                    if self._retry_s is None else self._retry_s * 2)
                continue
            self._retry_s = None
            if new is None or not _owned(new, self._sub):
                return  # expired (or unreadable): a reconnect gets the 404
            record = new
            data = self.data(record)

    def _tokens_at(self, now: float) -> float:
        """The reads this stream may make at once at `now` (a token bucket)."""
        return min(float(self._hub.read_burst),
                   self._tokens + (now - self._read_at) * self._hub.read_rate_per_s)

    def _next_read(self, now: float) -> float:
        """When a notice may be followed by a read: now, or when the bucket has a token."""
        missing = 1 - self._tokens_at(now)
        return now if missing <= 1e-9 else now + missing / self._hub.read_rate_per_s

    async def _wait(self, response: Any) -> str:
        """Wait for a reason to re-read ("read"), sending heartbeats meanwhile; or "time
        limit", or "closing"."""
        hub = self._hub
        while True:
            if hub.closing:
                return "closing"
            now = self._loop.time()
            if now >= self._end:
                return "time limit"
            changed = self._waiter.changed.is_set()
            if changed:
                next_read = self._next_read(now)
            else:  # a safety re-read, or the retry of a failed read (a pooled connection
                # may be dead after an outage, though the subscription is back)
                next_read = self._read_at + (hub.safety_s if self._retry_s is None
                                             else self._retry_s)
            if now >= next_read:
                return "read"
            heartbeat_at = self._quiet_since + self._heartbeat_s
            if now >= heartbeat_at:
                await response.send(HEARTBEAT, end_stream=False)
                self._quiet_since = now
                continue
            pause = min(next_read, heartbeat_at, self._end) - now
            if changed:
                await asyncio.sleep(pause)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._waiter.changed.wait()
