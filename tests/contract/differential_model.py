"""The interpreter of the broker differential test: one operation sequence, run on a side.

A side is one broker under test: the in-memory broker (`MemorySide`) or RabbitMQ reached
through a TcpProxy (`RabbitSide`, in rabbit_harness.py). `run_ops` applies the operations to a
side and returns what an observer sees after each one: the operation's outcome (a value, or the
name of the exception it raised) and the deliveries the consumer received since the step
before (body, redelivered, delivery_count, message_id, in arrival order).

The fake is run first, then RabbitMQ with the fake's trace as hints: where RabbitMQ is only
eventually consistent (a requeue shows in message_count a moment after the reject, a
dead-letter arrives a moment after the reject, a delivery crosses the network after the ack
that freed a slot), the RabbitMQ side polls until it sees what the fake saw, for at most
`PATIENCE_S`; what it records is still what RabbitMQ showed, so a real difference stays a
difference. The fake is quiesced after every step instead (its tasks run until nothing
changes), which is what RabbitMQ has done by the time it answers: a message published while a
consumer has room is that consumer's before the publish is confirmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from reference.fakes.memory_broker import RECONNECT_PAUSE_S, InMemoryBroker
from reference.ports import Delivery, MessageBroker

QUEUE = "diff"
DLQ = QUEUE + ".dlq"
PATIENCE_S = 3.0  # the longest RabbitMQ gets to show what the fake showed
POLL_S = 0.003
QUIESCE_S = 0.01  # virtual
CONSUMER_RESUME_S = 1.0 + 2 * RECONNECT_PAUSE_S  # virtual


def at(hint: Any, index: int) -> Any:
    """hint[index], or None where the fake's trace has nothing there."""
    try:
        return hint[index]
    except (TypeError, IndexError):
        return None


def describe(delivery: Delivery) -> tuple[Any, ...]:
    return (delivery.body, delivery.redelivered, delivery.delivery_count, delivery.message_id)


async def eventually(probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool],
                     timeout: float = PATIENCE_S) -> Any:
    """`probe()` again and again until `done(result)` or the timeout; the last result."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        result = await probe()
        if done(result) or loop.time() > end:
            return result
        await asyncio.sleep(POLL_S)


async def attempt(call: Awaitable[Any]) -> tuple[str, Any]:
    """("ok", value), or ("error", the exception's type name): errors are outcomes too."""
    try:
        return "ok", await call
    except Exception as exc:
        return "error", type(exc).__name__


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time, for the fake (which does no I/O): when no callback is
    ready, the clock jumps to the next timer instead of waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _JumpingSelector(self._selector, self)  # type: ignore[has-type]

    def time(self) -> float:
        return self._now


class _JumpingSelector:
    def __init__(self, selector: Any, loop: VirtualTimeLoop) -> None:
        self._selector, self._loop = selector, loop

    def select(self, timeout: float | None = None) -> Any:
        events = self._selector.select(0)
        if events or timeout == 0:
            return events
        if timeout is None:  # nothing scheduled: only another thread can wake the loop
            return self._selector.select(None)
        self._loop._now += timeout
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)


def run_fake(ops: list[tuple[Any, ...]],
             delivery_limit: int | None) -> tuple[list[Any], list[str]]:
    """The fake's trace, on virtual time, and why RabbitMQ's cannot be predicted from it
    (see `Runner.before_cut` and `Runner.after_step`)."""
    unpredictable: list[str] = []
    side = MemorySide(delivery_limit)
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        trace = runner.run(run_ops(ops, side, unpredictable=unpredictable))
    return trace, unpredictable


class Side:
    """One broker under test. `patient` sides poll for the hints (eventual consistency)."""

    name = "abstract"
    patient = False
    quorum = False

    # Only the fake's run decides whether RabbitMQ's trace is predictable; these serve that.

    def ready_now(self, queue: str) -> int:
        return 0

    def limit_dead_letters(self) -> int:
        """Messages dead-lettered so far for going over the delivery limit."""
        return 0

    async def new_client(self) -> tuple[MessageBroker, tuple[str, Any]]:
        """A new client, and the outcome of connecting it (failing to connect is a case)."""
        raise NotImplementedError

    async def ready(self, queue: str, hint: Any) -> int:
        """Messages ready in `queue`, seen from the server (not through the client)."""
        raise NotImplementedError

    async def cut(self, client: MessageBroker, *, outage: bool) -> None:
        """Every client connection is lost now; during an `outage` nothing can connect again
        until `heal`. Returns once the client has seen its connection go."""
        raise NotImplementedError

    async def heal(self, *, outage: bool) -> None:
        """The broker can be reached again."""
        raise NotImplementedError

    async def reconnected(self, client: MessageBroker, consuming: bool) -> bool:
        """Wait until `client` is connected again after a lost connection, and its consumer
        (if `consuming`) is back. True if it came back by itself (without a call)."""
        raise NotImplementedError

    async def quiesce(self) -> None:
        """Let deliveries in flight arrive (the fake: run its tasks until nothing changes)."""

    def settled(self, delivery: Delivery) -> None:
        """`delivery` was acked or rejected (the side may have to see it through)."""

    async def flush(self) -> None:
        """Make sure the broker has every settle sent so far, before a connection is cut."""

    async def dead_letters(self, hint: Any) -> list[tuple[Any, ...]]:
        """What `<queue>.dlq` holds: (body, message_id, x-death reason) in queue order."""
        raise NotImplementedError

    async def cleanup(self) -> None:
        pass


class MemorySide(Side):
    name = "memory"

    def __init__(self, delivery_limit: int | None) -> None:
        self.server = InMemoryBroker()
        self.delivery_limit = delivery_limit
        self.quorum = delivery_limit is not None

    def ready_now(self, queue: str) -> int:
        return len(self.server.queues[queue].ready)

    def limit_dead_letters(self) -> int:
        return sum(1 for d in self.server.dead_letters(QUEUE) if d.reason == "delivery_limit")

    async def new_client(self) -> tuple[MessageBroker, tuple[str, Any]]:
        client = self.server.client(delivery_limit=self.delivery_limit)
        return client, await attempt(client.connect())

    async def ready(self, queue: str, hint: Any) -> int:
        return len(self.server.queues[queue].ready)

    async def cut(self, client: MessageBroker, *, outage: bool) -> None:
        if outage:
            self.server.faults.connection_loss.on()  # drops every connection at once
        else:
            self.server.drop_all("connection cut")

    async def heal(self, *, outage: bool) -> None:
        if outage:
            self.server.faults.connection_loss.off()

    async def reconnected(self, client: MessageBroker, consuming: bool) -> bool:
        if consuming:
            # A consumer looks again after its wait (bounded by 1 s) and its reconnect pause;
            # on virtual time that costs nothing.
            await asyncio.sleep(CONSUMER_RESUME_S)
            return True
        await attempt(client.ping())
        return True

    async def quiesce(self) -> None:
        await asyncio.sleep(QUIESCE_S)  # virtual time: every task runs until all wait

    async def dead_letters(self, hint: Any) -> list[tuple[Any, ...]]:
        return [(d.body, d.message_id, d.reason) for d in self.server.dead_letters(QUEUE)]


@dataclass
class Held:
    """A delivery not settled yet by the test, with where it came from."""

    delivery: Delivery
    consumer: int | None  # the consumer's number, None for a basic.get
    era: int  # connection era it arrived in (a new era starts with every lost connection)


class Runner:
    """Applies operations to one side and records the trace."""

    def __init__(self, side: Side, hints: list[Any] | None) -> None:
        self.side = side
        self.hints = hints
        self.trace: list[Any] = []
        self.client: MessageBroker | None = None
        self.consumer: Any = None
        self.consumer_no = 0
        self.prefetch = 0
        self.inbox: list[tuple[int, Delivery]] = []
        self.seen = 0
        self.held: list[Held] = []
        self.era = 0
        self.down = False
        self.published = 0
        # Why RabbitMQ's trace cannot be predicted from the fake's, if it cannot: RabbitMQ
        # has several faithful outcomes, or a known disagreement would show (only the fake's
        # run decides; see `before_cut` and `after_step`).
        self.unpredictable: list[str] = []
        self.leaked = 0  # see after_step

    def hint(self, index: int) -> Any:
        if self.hints is None or index >= len(self.hints):
            return None
        return self.hints[index]

    # --- the operations ---------------------------------------------------------------------

    async def op_publish(self, n: int, hint: Any) -> Any:
        assert self.client is not None
        outcomes = []
        for _ in range(n):
            self.published += 1
            p = self.published
            outcomes.append(await attempt(
                self.client.publish(QUEUE, f"m{p}".encode(), message_id=str(p))))
        return ("publish", [o if o[0] == "error" else "ok" for o in outcomes])

    async def op_get(self, hint: Any) -> Any:
        assert self.client is not None
        client = self.client

        def got_something(outcome: tuple[str, Any]) -> bool:
            # A requeue on another channel reaches a RabbitMQ queue a moment later: look again
            # while the fake got a message and RabbitMQ answers empty.
            return not (outcome == ("ok", None) and hint is not None and hint[1] != ("ok", None))

        async def probe() -> tuple[str, Any]:
            return await attempt(client.get(QUEUE))

        outcome = await probe() if not self.side.patient else await eventually(probe, got_something)
        if outcome[0] == "ok" and outcome[1] is not None:
            self.held.append(Held(outcome[1], None, self.era))
            return ("get", ("ok", describe(outcome[1])))
        return ("get", outcome)

    async def op_settle(self, kind: str, index: int, requeue: bool, hint: Any) -> Any:
        if not self.held:
            return ("skip",)
        item = self.held.pop(index % len(self.held))
        over_limit = self.side.limit_dead_letters()
        if kind == "ack":
            outcome = await attempt(item.delivery.ack())
        else:
            outcome = await attempt(item.delivery.reject(requeue=requeue))
        self.side.settled(item.delivery)
        if (self.side.limit_dead_letters() > over_limit and self.consumer is not None
                and item.consumer == self.consumer_no and item.era == self.era):
            self.leaked += 1
        return (kind, item.delivery.body, outcome[0] if outcome[0] == "ok" else outcome)

    async def op_count(self, hint: Any) -> Any:
        assert self.client is not None
        client = self.client

        async def probe() -> tuple[str, Any]:
            return await attempt(client.message_count(QUEUE))

        if not self.side.patient or hint is None:
            return ("count", await probe())
        return ("count", await eventually(probe, lambda o: o == hint[1]))

    async def op_consume(self, prefetch: int, hint: Any) -> Any:
        assert self.client is not None
        if self.consumer is not None:
            return ("skip",)
        self.consumer_no += 1
        number = self.consumer_no

        async def handler(delivery: Delivery) -> None:
            self.inbox.append((number, delivery))

        outcome = await attempt(self.client.consume(QUEUE, handler, prefetch=prefetch))
        if outcome[0] == "ok":
            self.consumer, self.prefetch, self.leaked = outcome[1], prefetch, 0
            return ("consume", prefetch, "ok")
        return ("consume", prefetch, outcome)

    async def op_cancel(self, hint: Any) -> Any:
        if self.consumer is None:
            return ("skip",)
        consumer, self.consumer = self.consumer, None
        outcome = await attempt(consumer.cancel())
        return ("cancel", outcome[0] if outcome[0] == "ok" else outcome)

    async def op_reconnect(self, hint: Any) -> Any:
        """Close the client (held deliveries stay held: settling them is a case), open another."""
        assert self.client is not None
        self.before_cut()
        await self.side.flush()
        closed = await attempt(self.client.close())
        self.consumer = None
        self.era, self.leaked = self.era + 1, 0
        ready = await self.side.ready(QUEUE, at(hint, 2))
        self.client, connected = await self.side.new_client()
        return ("reconnect", closed[0] if closed[0] == "ok" else closed, ready,
                connected[0] if connected[0] == "ok" else connected)

    async def op_drop(self, hint: Any) -> Any:
        """The connection is cut; the client reconnects by itself (and its consumer resumes)."""
        assert self.client is not None
        if self.down:
            return ("skip",)
        self.before_cut()
        await self.side.flush()
        await self.side.cut(self.client, outage=False)
        self.era, self.leaked = self.era + 1, 0
        # RabbitMQ takes the unsettled messages back once it sees the connection go: wait for
        # that before the client can reconnect, or a resumed consumer races the requeue.
        ready = await self.side.ready(QUEUE, at(hint, 1))
        await self.side.heal(outage=False)
        by_itself = await self.side.reconnected(self.client, self.consumer is not None)
        return ("drop", ready, by_itself)

    async def op_outage(self, hint: Any) -> Any:
        """Toggle an outage: the broker goes away (publish and settles fail), or comes back."""
        assert self.client is not None
        self.down = not self.down
        if self.down:
            self.before_cut()
            await self.side.flush()
            await self.side.cut(self.client, outage=True)
            self.era, self.leaked = self.era + 1, 0
            return ("outage", await self.side.ready(QUEUE, at(hint, 1)))
        await self.side.heal(outage=True)
        return ("restored", await self.side.reconnected(self.client, self.consumer is not None))

    # --- where RabbitMQ has more than one outcome -----------------------------------------------

    def before_cut(self) -> None:
        """RabbitMQ closes a connection's channels one by one: a message that one channel hands
        back can go to a consumer with room on another channel of the same connection, and be
        handed back again when that channel closes. On a quorum queue that return counts
        twice toward the delivery limit, or not (the fake hands all back at once). And a
        quorum queue serves returned messages in the order they came back, which for the
        deliveries of one lost connection is delivery order within a channel (the fake keeps
        it too) but no fixed order across channels (they close one by one): deliveries held
        on two or more channels at a cut have no order we can predict."""
        if self.side.quorum and self.consumer is not None:
            mine = sum(1 for h in self.held
                       if h.consumer == self.consumer_no and h.era == self.era)
            others = sum(1 for h in self.held
                         if h.consumer != self.consumer_no and h.era == self.era)
            if mine < self.prefetch and others:
                self.unpredictable.append("quorum: a cut while a consumer has room and another "
                                          "channel holds deliveries (they may bounce)")
        channels = {h.consumer for h in self.held if h.era == self.era}
        if self.side.quorum and len(channels) >= 2:
            self.unpredictable.append("quorum: a cut hands back deliveries of two or more "
                                      "channels (in no fixed order)")

    def after_step(self) -> None:
        """RabbitMQ 3.10 (a bug, reported): each message a consumer's reject(requeue=True)
        dead-letters for its delivery limit gives that consumer one more delivery than its
        prefetch, for as long as it consumes. The traces part once the fake's consumer is
        full and messages wait."""
        if self.leaked and self.consumer is not None and self.side.ready_now(QUEUE):
            mine = sum(1 for h in self.held
                       if h.consumer == self.consumer_no and h.era == self.era)
            if mine >= self.prefetch:
                self.unpredictable.append("rabbitmq 3.10: a quorum consumer's credit leaks when "
                                      "its reject dead-letters for the delivery limit")

    # --- after every step -------------------------------------------------------------------

    async def drain(self, hint: Any, *, grace: float = 0.0) -> list[Any]:
        """The consumer's deliveries since the last step; checks the prefetch bound."""
        if self.side.patient:
            want = self.seen + (len(hint) if hint is not None else 0)
            await eventually(self._inbox_size, lambda n: n >= want)
            if grace:
                await asyncio.sleep(grace)
        else:
            await self.side.quiesce()
        new = self.inbox[self.seen:]
        self.seen = len(self.inbox)
        for number, delivery in new:
            self.held.append(Held(delivery, number, self.era))
        if self.consumer is not None:
            unsettled = sum(1 for h in self.held
                            if h.consumer == self.consumer_no and h.era == self.era)
            assert unsettled <= self.prefetch, (
                f"{self.side.name}: {unsettled} unsettled deliveries, prefetch {self.prefetch}")
        return [(number, describe(d)) for number, d in new]

    async def _inbox_size(self) -> int:
        return len(self.inbox)

    async def step(self, index: int, op: tuple[Any, ...]) -> None:
        hint = self.hint(index)
        kind = op[0]
        if kind == "publish":
            result = await self.op_publish(op[1], at(hint, 0))
        elif kind == "get":
            result = await self.op_get(at(hint, 0))
        elif kind in {"ack", "reject"}:
            result = await self.op_settle(kind, op[1], bool(op[2]) if len(op) > 2 else False,
                                          at(hint, 0))
        elif kind == "count":
            result = await self.op_count(at(hint, 0))
        elif kind == "consume":
            result = await self.op_consume(op[1], at(hint, 0))
        elif kind == "cancel":
            result = await self.op_cancel(at(hint, 0))
        elif kind == "reconnect":
            result = await self.op_reconnect(at(hint, 0))
        elif kind == "drop":
            result = await self.op_drop(at(hint, 0))
        elif kind == "outage":
            result = await self.op_outage(at(hint, 0))
        else:
            raise ValueError(f"unknown operation {op!r}")
        delivered = await self.drain(at(hint, 1))
        self.trace.append((result, delivered))
        self.after_step()

    async def final(self) -> None:
        """End an outage still on; then what is left: deliveries, ready count, dead letters."""
        assert self.client is not None
        index = len(self.trace)
        hint = self.hint(index)
        restored = None
        if self.down:
            restored = await self.op_outage(None)
        delivered = await self.drain(at(hint, 1), grace=0.05 if self.consumer else 0.0)
        client = self.client

        async def probe() -> tuple[str, Any]:
            return await attempt(client.message_count(QUEUE))

        count_hint = at(hint, 2)
        count = (await eventually(probe, lambda o: o == count_hint)
                 if self.side.patient and hint is not None else await probe())
        # Sorted: the channels of a lost connection dead-letter in no fixed order.
        dead = sorted(await self.side.dead_letters(at(hint, 3)))
        self.trace.append((restored, delivered, count, dead))
        await attempt(client.close())


async def run_ops(ops: list[tuple[Any, ...]], side: Side, hints: list[Any] | None = None,
                  unpredictable: list[str] | None = None) -> list[Any]:
    """Apply `ops` on `side` and return what an observer sees after each one."""
    runner = Runner(side, hints)
    if unpredictable is not None:
        runner.unpredictable = unpredictable
    runner.client, connected = await side.new_client()
    assert connected == ("ok", None), f"{side.name}: connect failed: {connected}"
    await runner.client.declare_queue(QUEUE)
    try:
        for index, op in enumerate(ops):
            await runner.step(index, op)
        await runner.final()
    finally:
        await side.cleanup()
    return runner.trace

