"""One trace from the client through the API and the queue to the worker (OpenTelemetry SDK)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from reference.fakes.pipeline import Pipeline, running_pipeline
from tests.api.conftest import api_settings
from tests.otel import recorded_spans

pytestmark = pytest.mark.asyncio(loop_scope="function")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


async def check_one_trace(p: Pipeline) -> None:
    """A request with a traceparent gives a PRODUCER span (child of the client's span) in the
    API and a CONSUMER span (child of the producer) in the worker, all in the client's trace;
    a request without one starts a trace of its own, still linked API -> worker."""
    with recorded_spans() as spans:
        answer = await p.client.post(
            "/jobs", json={"duration_ms": 0},
            headers={**p.auth(), "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"})
        assert answer.status_code == 200
        fresh = await p.client.post("/jobs", json={"duration_ms": 0}, headers=p.auth())
        assert fresh.status_code == 200
        finished = spans.get_finished_spans()
    by_kind: dict[trace.SpanKind, list[ReadableSpan]] = {}
    for span in finished:
        by_kind.setdefault(span.kind, []).append(span)
    producers = {_rid(s): s for s in by_kind[trace.SpanKind.PRODUCER]}
    consumers = {_rid(s): s for s in by_kind[trace.SpanKind.CONSUMER]}
    rid, other = answer.headers["X-Request-ID"], fresh.headers["X-Request-ID"]
    assert set(producers) == set(consumers) == {rid, other}
    producer, consumer = producers[rid], consumers[rid]
    assert f"{_context(producer).trace_id:032x}" == TRACE_ID
    assert _parent(producer) == int(CLIENT_SPAN, 16)
    assert _context(consumer).trace_id == _context(producer).trace_id
    assert _parent(consumer) == _context(producer).span_id
    assert (consumer.attributes or {})["reference.action"] == "runJob"
    assert f"{_context(producers[other]).trace_id:032x}" != TRACE_ID
    assert _parent(consumers[other]) == _context(producers[other]).span_id


def _rid(span: ReadableSpan) -> str:
    return str((span.attributes or {})["messaging.message.id"])


def _context(span: ReadableSpan) -> trace.SpanContext:
    assert span.context is not None
    return span.context


def _parent(span: ReadableSpan) -> int:
    assert span.parent is not None
    return span.parent.span_id


@pytest.mark.parametrize("completion", ["push", "reply"])
async def test_the_worker_span_continues_the_clients_trace(completion: str) -> None:
    """On the fakes, with push and reply completion, one trace spans client, API and worker."""
    settings = api_settings(queue=f"trace-{completion}", completion=completion)
    async with running_pipeline(settings) as p:
        await check_one_trace(p)
