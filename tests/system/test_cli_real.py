"""Start-up errors against a real RabbitMQ: one line, no traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from reference.adapters.rabbitmq import RabbitMQBroker
from tests.conftest import AMQP_URL, REDIS_URL, delete_queue_and_keys, require_server

pytestmark = pytest.mark.real


@pytest.mark.parametrize("command", ["worker", "serve"])
async def test_queue_with_other_arguments_is_one_line(command: str, unique: str) -> None:
    """A queue declared classic, then asked for as quorum: exit 2 with one line naming the
    queue and RabbitMQ's account of the difference."""
    require_server(AMQP_URL, 5672)
    require_server(REDIS_URL, 6379)
    queue = f"mismatch-{unique}"
    first = RabbitMQBroker(AMQP_URL)
    await first.connect()
    await first.declare_queue(queue)
    await first.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERENCE_")}
    env.update(REFERENCE_BROKER_URL=AMQP_URL, REFERENCE_STORE_URL=REDIS_URL,
               REFERENCE_QUEUE=queue, REFERENCE_QUEUE_TYPE="quorum",
               REFERENCE_JWT_SECRET="s" * 32, REFERENCE_CONNECT_TIMEOUT_S="3")
    try:
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "reference", command], env=env,
            capture_output=True, text=True, timeout=60)
    finally:
        await delete_queue_and_keys(queue, f"none-{unique}:")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"reference: error: queue '{queue}' already exists")
    assert "x-queue-type" in last
