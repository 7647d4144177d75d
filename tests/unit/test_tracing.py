"""W3C trace context: what passes the API, and the spans it becomes with OpenTelemetry."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from reference import tracing
from tests.otel import recorded_spans

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as exporter:
        yield exporter


@pytest.fixture
def without_otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import fails, as if absent
    tracing._otel.cache_clear()
    yield
    monkeypatch.undo()
    tracing._otel.cache_clear()


@pytest.mark.parametrize("value", [
    PARENT.upper(),  # upper-case hex is not W3C's form
    "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero parent id
    "ff" + PARENT[2:],  # version ff is forbidden (and others are not ours to read)
    PARENT + "-extra",
    PARENT[:-1],
    "00-\uff14bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # a full-width digit
    "",
])
def test_a_malformed_traceparent_is_dropped(value: str) -> None:
    """A traceparent that is not W3C's version-00 form never reaches a message."""
    assert tracing.trace_context({"traceparent": value, "tracestate": "a=b"}) == {}


def test_tracestate_passes_only_with_a_valid_parent_and_printable() -> None:
    """tracestate rides along a valid traceparent; an over-long or non-ASCII one is dropped."""
    assert tracing.trace_context({"traceparent": PARENT, "tracestate": "k=v"}) == {
        "traceparent": PARENT, "tracestate": "k=v"}
    for bad in ("x" * 513, "k=\u00e9", "k=\x00"):
        assert tracing.trace_context({"traceparent": PARENT, "tracestate": bad}) == {
            "traceparent": PARENT}
    assert tracing.trace_context({"traceparent": 5}) == {}


def test_without_opentelemetry_the_clients_parent_passes_unchanged(without_otel: None) -> None:
    """No OpenTelemetry: the client's traceparent is forwarded as is; none is made up."""
    with tracing.producer_span({"traceparent": PARENT}, queue="q", action="a",
                               request_id="r") as headers:
        assert headers == {"traceparent": PARENT}
    with tracing.producer_span({}, queue="q", action="a", request_id="r") as headers:
        assert headers == {}
    with tracing.consumer_span({"traceparent": PARENT}, queue="q", action="a", request_id="r"):
        pass
    assert tracing._otel() is None


def test_with_opentelemetry_the_worker_span_is_a_child_of_the_api_span(
        spans: InMemorySpanExporter) -> None:
    """With an SDK: the producer span continues the client's trace, its id goes into the
    headers, and the consumer span made from those headers is its child in the same trace."""
    with tracing.producer_span({"traceparent": PARENT}, queue="q", action="createUser",
                               request_id="r1") as headers:
        pass
    with tracing.consumer_span(headers, queue="q", action="createUser", request_id="r1"):
        pass
    producer, consumer = spans.get_finished_spans()
    assert producer.kind is trace.SpanKind.PRODUCER
    assert consumer.kind is trace.SpanKind.CONSUMER
    assert f"{producer.context.trace_id:032x}" == PARENT.split("-")[1]
    assert f"{producer.parent.span_id:016x}" == PARENT.split("-")[2]
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent.span_id == producer.context.span_id
    assert headers["traceparent"].split("-")[2] == f"{producer.context.span_id:016x}"
    assert consumer.attributes["messaging.message.id"] == "r1"
    assert consumer.attributes["reference.action"] == "createUser"


def test_installed_but_not_configured_makes_no_spans() -> None:
    """With OpenTelemetry installed and no tracer provider set (a fresh process), no span is
    made and the client's traceparent passes unchanged, as without OpenTelemetry."""
    code = (
        "from reference import tracing\n"
        "assert tracing._otel() is not None and not tracing.enabled()\n"
        f"with tracing.producer_span({{'traceparent': {PARENT!r}}}, queue='q', action='a',\n"
        "                            request_id='r') as headers:\n"
        f"    assert headers == {{'traceparent': {PARENT!r}}}, headers\n"
        "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr
