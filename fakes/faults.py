"""Faults that the fakes can show, as a public API for this project's tests and for yours.

Every fault is a `Fault`: off until you switch it on, for a window or on the n-th call::

    faults.store.reset.on()                  # every Redis command fails until .off()
    faults.store.readonly.on(for_s=2.0)      # for two seconds of loop time
    faults.broker.nack.on_call(3)            # the third publish from now is nacked
    faults.broker.slow_confirm.on(delay_s=0.5)

The names follow toxiproxy's vocabulary where it has one (`latency`, `timeout`, `reset_peer`,
black holes). Each injection point sits at the fake's edge and raises exactly what the real
driver raises for the same fault (redis-py's exceptions for the store, the adapter's
`BrokerUnavailable` for the broker), so that the adapters' own error mapping is what gets
tested. The core never sees a fault object.

Windows are measured in event-loop time: under a virtual-time loop (the simulation), a window
of 30 s costs no real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def _loop_time() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class Fault:
    """One fault point. `fires()` is asked once per call at the point; it counts the calls."""

    def __init__(self, name: str, doc: str = "", *, delay_s: float = 0.0) -> None:
        self.name = name
        self.__doc__ = doc
        self.delay_s = delay_s
        self.calls = 0  # calls seen at this point
        self.fired = 0  # calls the fault hit
        self._always = False
        self._until: float | None = None
        self._hits: set[int] = set()
        self._switched_on: list[Callable[[], None]] = []

    def when_switched_on(self, hook: Callable[[], None]) -> None:
        """Run `hook` whenever `on()` starts the fault (a fake that must act at once, as a
        broker outage drops every connection at its start, not at the next call)."""
        self._switched_on.append(hook)

    def on(self, *, for_s: float | None = None, delay_s: float | None = None) -> Fault:
        """Switch on, until `off()` or for `for_s` seconds of loop time."""
        if delay_s is not None:
            self.delay_s = delay_s
        if for_s is None:
            self._always, self._until = True, None
        else:
            self._always, self._until = False, _loop_time() + for_s
        for hook in self._switched_on:
            hook()
        return self

    def on_call(self, n: int = 1, *, times: int = 1, delay_s: float | None = None) -> Fault:
        """Hit the n-th call from now (1: the next one), and the `times - 1` calls after it."""
        if n < 1 or times < 1:
            raise ValueError("n and times must be at least 1")
        if delay_s is not None:
            self.delay_s = delay_s
        self._hits.update(range(self.calls + n, self.calls + n + times))
        return self

    def off(self) -> None:
        self._always, self._until = False, None
        self._hits.clear()

    @property
    def active(self) -> bool:
        """On now, by switch or window (n-th-call hits do not count until they happen)."""
        if self._always:
            return True
        if self._until is not None:
            if _loop_time() < self._until:
                return True
            self._until = None
        return False

    def fires(self) -> bool:
        """Count one call at this point; True if the fault hits it."""
        self.calls += 1
        hit = self.calls in self._hits
        if hit:
            self._hits.discard(self.calls)
        if hit or self.active:
            self.fired += 1
            return True
        return False

    def __repr__(self) -> str:
        state = "on" if self.active else ("armed" if self._hits else "off")
        return f"<Fault {self.name} {state} fired={self.fired}/{self.calls}>"


class _Group:
    def all(self) -> list[Fault]:
        return [v for v in vars(self).values() if isinstance(v, Fault)]

    def off(self) -> None:
        for fault in self.all():
            fault.off()


class BrokerFaults(_Group):
    """Faults of the in-memory broker, asked at every client operation."""

    def __init__(self) -> None:
        self.connection_loss = Fault(
            "connection_loss",
            "Every connection drops: unsettled deliveries go back redelivered; publish, ack, "
            "consume and connect fail with BrokerUnavailable. On a window, clients reconnect "
            "(and consumers resume) once it ends; on the n-th call, right after.")
        self.channel_closed = Fault(
            "channel_closed",
            "The broker closes the channel that the operation used (a settle or a publish): "
            "that operation fails with BrokerUnavailable, a consumer's unsettled deliveries go "
            "back, and the consumer attaches again on a new channel.")
        self.nack = Fault("nack", "The broker nacks a publish: BrokerUnavailable, nothing queued.")
        self.confirm_lost = Fault(
            "confirm_lost",
            "The message is queued but its confirm never comes: publish fails with "
            "BrokerUnavailable after the confirm timeout.")
        self.slow_confirm = Fault("slow_confirm", "The confirm comes after `delay_s`.",
                                  delay_s=0.5)
        self.blackhole = Fault(
            "blackhole",
            "The link goes silent without closing: operations hang until the detection bound "
            "(heartbeat or confirm timeout), then fail as a lost connection.")
        self.reply_lost = Fault(
            "reply_lost",
            "A Direct Reply-To reply is dropped on its way: `send_reply` returns as usual (a "
            "reply is neither mandatory nor confirmed), and its consumer never gets it, as "
            "when the requester's channel went away in between.")


class StoreFaults(_Group):
    """Faults of a fake Redis, asked at every command a client sends."""

    def __init__(self) -> None:
        self.refused = Fault("refused", "Connecting is refused (ConnectionError, nothing sent).")
        self.reset_peer = Fault("reset_peer",
                                "The connection is reset before the command reaches the server.")
        self.closed_transport = Fault(
            "closed_transport",
            "The transport closes mid-command: the server ran it, the reply is lost "
            "(uvloop's RuntimeError 'the handler is closed').")
        self.timeout = Fault("timeout",
                             "The reply does not come within the socket timeout: the server ran "
                             "the command, the client raises TimeoutError.")
        self.readonly = Fault("readonly", "READONLY: the server is a replica; writes (scripts "
                              "included) are refused, reads are served.")
        self.oom = Fault("oom", "OOM: maxmemory reached; write commands are refused.")
        self.latency = Fault("latency", "Replies come `delay_s` late.", delay_s=0.2)
        self.blackhole = Fault("blackhole",
                               "The link goes silent: the command is never answered and the "
                               "client gives up after its socket timeout.")


@dataclass
class ClockFaults:
    """Jumps of the wall clock that `reference.clock.now_ms` reads (loop time is untouched)."""

    offset_s: float = 0.0
    jumps: list[float] = field(default_factory=list)

    def jump(self, seconds: float) -> None:
        """Move the wall clock by `seconds` (negative: backwards), as NTP or a VM pause does."""
        self.offset_s += seconds
        self.jumps.append(seconds)


@dataclass
class Faults:
    """All the faults of one in-memory deployment: its broker, its Redis server, its clock."""

    broker: BrokerFaults = field(default_factory=BrokerFaults)
    store: StoreFaults = field(default_factory=StoreFaults)
    clock: ClockFaults = field(default_factory=ClockFaults)

    def off(self) -> None:
        """Switch every fault off (clock jumps stay where they are)."""
        self.broker.off()
        self.store.off()

    def fired(self) -> dict[str, int]:
        return {f"{group}.{f.name}": f.fired
                for group, faults in (("broker", self.broker), ("store", self.store))
                for f in faults.all() if f.fired}
