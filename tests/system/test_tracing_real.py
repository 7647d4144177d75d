"""The trace across API -> RabbitMQ -> worker on the real brokers: traceparent survives AMQP."""

from __future__ import annotations

import pytest

from reference.fakes.pipeline import running_pipeline
from reference.settings import Settings
from tests.api.test_tracing_http import check_one_trace
from tests.system.conftest import RealBrokers

pytestmark = pytest.mark.real

SECRET = "trace-secret-" + "t" * 24


async def test_one_trace_spans_api_queue_and_worker(real: RealBrokers) -> None:
    """On RabbitMQ and Redis, the worker's span is the child of the API's, in the client's
    trace (the traceparent rode in the AMQP headers)."""
    settings = Settings(broker_url=real.amqp_url, store_url=real.redis_url, queue=real.queue,
                        key_prefix=real.key_prefix, jwt_secret=SECRET, completion="push",
                        request_timeout_s=8.0, shutdown_timeout_s=1.0)
    async with running_pipeline(settings) as p:
        await check_one_trace(p)
