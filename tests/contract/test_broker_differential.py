"""Differential test: random broker operations on the in-memory broker and on RabbitMQ,
with every observable outcome compared (in the style of fakeredis' hypothesis tests).

Each example draws a queue (classic, or quorum with `x-delivery-limit` k) and a sequence of
operations: publish, basic.get, ack or reject (requeue or not) of any delivery still held,
message_count, a consumer with prefetch N (and its cancel), closing the client and opening
another, a lost connection (the client reconnects by itself), and an outage window (the broker
unreachable until the next `outage`). After each operation the trace holds its outcome (a
value, or the name of the exception raised: BrokerUnavailable for a publish during an outage
or a settle on a lost connection) and what the consumer received since (body, redelivered,
delivery_count, message_id, in order); the consumer never holds more unsettled deliveries than
its prefetch. At the end: the deliveries still due, the ready count, and the dead-letter queue
(body, message_id, x-death reason). The RabbitMQ side runs through a TcpProxy, so that a lost
connection is a real cut. See differential_model.py for how eventual consistency is waited for.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, reject, settings
from hypothesis import strategies as st

from tests.conftest import AMQP_URL, require_server
from tests.contract.differential_model import run_fake, run_ops
from tests.faults import TcpProxy

pytestmark = pytest.mark.real

# How often each operation is drawn (the ones that cut connections cost a reconnect).
_KINDS = (["publish"] * 4 + ["get"] * 3 + ["ack"] * 3 + ["reject"] * 3 + ["count"]
          + ["consume"] * 3 + ["cancel", "reconnect"] + ["drop"] * 2 + ["outage"] * 2)


def _op(kind: str) -> st.SearchStrategy[tuple[Any, ...]]:
    if kind == "publish":
        return st.tuples(st.just(kind), st.integers(1, 3))
    if kind == "ack":
        return st.tuples(st.just(kind), st.integers(0, 7))
    if kind == "reject":
        return st.tuples(st.just(kind), st.integers(0, 7), st.booleans())
    if kind == "consume":
        return st.tuples(st.just(kind), st.integers(1, 3))
    return st.tuples(st.just(kind))


OPS = st.lists(st.sampled_from(_KINDS).flatmap(_op), min_size=2, max_size=32)
# None: a classic queue; k: a quorum queue with x-delivery-limit k.
LIMITS = st.sampled_from([None, None, 0, 1, 2])

EXAMPLES = int(os.environ.get("REFERENCE_DIFF_EXAMPLES", "300"))


@pytest.fixture(scope="module")
def proxy() -> Iterator[TcpProxy]:
    require_server(AMQP_URL, 5672)
    p = TcpProxy.for_url(AMQP_URL, 5672).start()
    yield p
    p.stop()


def on_rabbitmq(ops: list[tuple[Any, ...]], limit: int | None, proxy: TcpProxy,
                hints: list[Any]) -> list[Any]:
    from tests.contract.rabbit_harness import RabbitSide

    return asyncio.run(run_ops(ops, RabbitSide(AMQP_URL, proxy, limit), hints=hints))


def both(ops: list[tuple[Any, ...]], limit: int | None,
         proxy: TcpProxy) -> tuple[list[Any], list[Any]]:
    """The fake's trace (on virtual time), then RabbitMQ's, with the fake's as hints.
    A sequence where RabbitMQ has more than one faithful outcome, or where a known
    disagreement (see KNOWN) would show, is not run on RabbitMQ."""
    fake, unpredictable = run_fake(ops, limit)
    for why in dict.fromkeys(unpredictable):
        event(f"rejected: {why}")
    if unpredictable:
        reject()
    event("classic queue" if limit is None else "quorum queue")
    for what in covered(fake):
        event(what)
    return fake, on_rabbitmq(ops, limit, proxy, fake)


def covered(trace: list[Any]) -> set[str]:
    """What a trace exercised, for --hypothesis-show-statistics."""
    seen = set()
    for result, delivered, *_ in trace:
        if delivered:
            seen.add("consumer deliveries")
        if any(d[1][1] for d in delivered):
            seen.add("redelivered to a consumer")
        if not isinstance(result, tuple):
            continue
        if result[0] in {"ack", "reject"} and result[2] != "ok":
            seen.add(f"{result[0]} raised {result[2][1]}")
        if result[0] == "publish" and any(o != "ok" for o in result[1]):
            seen.add("publish raised")
        if result[0] == "get" and result[1][0] == "ok" and result[1][1] and result[1][1][1]:
            seen.add("redelivered to a get")
        if result[0] in {"drop", "outage", "reconnect"}:
            seen.add(result[0])
    final = trace[-1]
    for reason in {d[2] for d in final[3]}:
        seen.add(f"dead-lettered: {reason}")
    return seen


# The case that found the fake's requeue order (it put returns at the head, in return order).
@example(ops=[("publish", 3), ("get",), ("get",), ("get",), ("reject", 1, True),
              ("reject", 0, True), ("reject", 0, True), ("get",), ("get",), ("get",)],
         limit=None)
@example(ops=[("publish", 2), ("get",), ("reconnect",), ("get",), ("get",), ("count",)],
         limit=None)
@example(ops=[("publish", 2), ("get",), ("reject", 0, False), ("get",), ("ack", 0)], limit=None)
# Found flaky in CI: a count right after a requeue (RabbitMQ shows it a moment later).
@example(ops=[("publish", 3), ("get",), ("reject", 0, True), ("count",)], limit=None)
# Prefetch: two of three come, an ack lets the third come.
@example(ops=[("publish", 3), ("consume", 2), ("ack", 0), ("ack", 0), ("ack", 0)], limit=None)
# A quorum queue's delivery limit: the third return dead-letters (delivery_limit).
@example(ops=[("publish", 1), ("consume", 1), ("reject", 0, True), ("reject", 0, True),
              ("reject", 0, True)], limit=2)
# Settling after the connection was lost or closed; a publish during an outage; redelivery.
@example(ops=[("publish", 1), ("get",), ("drop",), ("ack", 0), ("get",)], limit=None)
@example(ops=[("publish", 1), ("consume", 1), ("reconnect",), ("ack", 0), ("consume", 1)],
         limit=1)
@example(ops=[("publish", 1), ("consume", 1), ("outage",), ("publish", 1), ("ack", 0),
              ("outage",)], limit=None)
# Pinned as disagreements until fixed, now agreements: a quorum queue serves returns first, in
# the order they came back; an outage drops every connection at its start (the ack after it
# fails); a client whose first connect failed still has its reconnect supervisor (its consumer
# resumes by itself after a lost connection).
@example(ops=[("publish", 2), ("get",), ("get",), ("reject", 1, True), ("reject", 0, True),
              ("get",)], limit=2)
@example(ops=[("publish", 1), ("get",), ("outage",), ("outage",), ("ack", 0)], limit=None)
@example(ops=[("outage",), ("reconnect",), ("outage",), ("publish", 1), ("consume", 1),
              ("drop",)], limit=None)
# A lost connection hands back one channel's deliveries in delivery order (the fake used a set).
@example(ops=[("publish", 2), ("get",), ("get",), ("drop",), ("get",)], limit=2)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=OPS, limit=LIMITS)
def test_memory_broker_matches_rabbitmq(ops: list[tuple[Any, ...]], limit: int | None,
                                        proxy: TcpProxy) -> None:
    """The same operations give the same observations on the fake and on RabbitMQ."""
    fake, real = both(ops, limit, proxy)
    assert fake == real



# The disagreements found between the fake and RabbitMQ 3.10.8, each as its shortest sequence
# and what each side did at the step where they part. The random test steers clear of them
# (Runner.after_step). These pins pass while the disagreement is there and fail
# once it is gone (a strict xfail by hand: conftest turns xfail, a kind of skip, into a failure
# for real tests under CI=true); then remove the pin and the steering.
KNOWN = [
    pytest.param(
        [("publish", 3), ("consume", 1), ("reject", 0, True)],
        0, 2,
        (("reject", b"m1", "ok"), [(1, (b"m2", False, 1, "2"))]),
        "AssertionError: rabbitmq: 2 unsettled deliveries, prefetch 1",
        id="rabbitmq-3.10:quorum-credit-leak"),  # m2 and m3 come, with prefetch 1
]


@pytest.mark.parametrize(("ops", "limit", "step", "fake_did", "real_did"), KNOWN)
def test_known_disagreement(ops: list[tuple[Any, ...]], limit: int | None, step: int,
                            fake_did: Any, real_did: Any, proxy: TcpProxy) -> None:
    fake, _ = run_fake(ops, limit)
    try:
        real: Any = on_rabbitmq(ops, limit, proxy, fake)
    except AssertionError as exc:
        real = f"AssertionError: {exc}"
    if fake == real:
        pytest.fail("the fake and RabbitMQ agree now: remove this pin from KNOWN, and the "
                    "steering around it from the random test")

    def did(trace: Any) -> Any:
        if isinstance(trace, str):
            return trace
        return trace[step] if isinstance(fake_did[0], tuple) else trace[step][0]

    assert (did(fake), did(real)) == (fake_did, real_did)
