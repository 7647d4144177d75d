"""W3C Trace Context across the queue: API -> message headers -> worker.

The API puts `traceparent` (and `tracestate`) in the AMQP headers of each request message; the
worker continues the trace from them. With OpenTelemetry's API installed (the `otel` extra) and
an SDK configured by the application, the API records a PRODUCER span around queueing the
request and the worker a CONSUMER span around handling it, its parent the API's span, so one
trace spans API -> queue -> worker. Without OpenTelemetry, or with it installed but no tracer
provider configured (checked on each call, so a provider set later takes effect), nothing is
recorded and nothing is generated: a valid `traceparent` that the client sent is passed on
unchanged (as a W3C participant that does not trace), at the cost of a header lookup.

Headers are input: a `traceparent` that is not W3C's version-00 form, and a `tracestate` that
is too long or not printable ASCII, are dropped, never passed on.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_TRACESTATE = re.compile(r"[\x20-\x7e]{1,512}")


def valid_traceparent(value: str | None) -> bool:
    return value is not None and _TRACEPARENT.fullmatch(value) is not None


def trace_context(headers: Mapping[str, Any]) -> dict[str, str]:
    """The valid W3C headers among `headers` (an HTTP request's or a message's)."""
    parent = headers.get(TRACEPARENT)
    if not isinstance(parent, str) or not valid_traceparent(parent):
        return {}
    context = {TRACEPARENT: parent}
    state = headers.get(TRACESTATE)
    if isinstance(state, str) and _TRACESTATE.fullmatch(state):
        context[TRACESTATE] = state
    return context


@cache
def _otel() -> Any:
    """OpenTelemetry's API modules, or None when the package is not installed."""
    try:
        from opentelemetry import propagate, trace
    except ImportError:
        return None
    return (trace, propagate, trace.get_tracer("reference"))


def _tracing() -> Any:
    """OpenTelemetry's API modules when spans are to be made: it is installed and the
    application configured a tracer provider (an SDK); else None. Installed but not
    configured, OpenTelemetry would make only non-recording spans: skipped, as it costs
    tens of microseconds per request for nothing."""
    otel = _otel()
    if otel is None:
        return None
    trace = otel[0]
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return otel


def enabled() -> bool:
    """Whether spans are made (OpenTelemetry installed, and a tracer provider configured)."""
    return _tracing() is not None


@contextlib.contextmanager
def producer_span(incoming: Mapping[str, Any], *, queue: str, action: str,
                  request_id: str) -> Iterator[dict[str, str]]:
    """Around queueing one request: yields the headers to publish it with (empty: none)."""
    otel = _tracing()
    if otel is None:
        yield trace_context(incoming)
        return
    with _span(otel, incoming, "publish", otel[0].SpanKind.PRODUCER, queue, action, request_id):
        carrier: dict[str, str] = {}
        otel[1].inject(carrier)
        yield trace_context(carrier)


@contextlib.contextmanager
def consumer_span(headers: Mapping[str, Any], *, queue: str, action: str,
                  request_id: str) -> Iterator[None]:
    """Around handling one delivery, continuing the trace its headers carry."""
    otel = _tracing()
    if otel is None:
        yield
        return
    with _span(otel, headers, "process", otel[0].SpanKind.CONSUMER, queue, action, request_id):
        yield


@contextlib.contextmanager
def _span(otel: Any, headers: Mapping[str, Any], operation: str, kind: Any, queue: str,
          action: str, request_id: str) -> Iterator[None]:
    """A current span `<queue> <operation>`, its parent the trace context in `headers`."""
    _, propagate, tracer = otel
    parent = propagate.extract(trace_context(headers))
    # OpenTelemetry's messaging semantic conventions, and the action as our own attribute.
    attributes = {"messaging.system": "rabbitmq", "messaging.operation.type": operation,
                  "messaging.destination.name": queue, "messaging.message.id": request_id,
                  "reference.action": action}
    with tracer.start_as_current_span(f"{queue} {operation}", context=parent, kind=kind,
                                      attributes=attributes):
        yield
