"""Run the journeys of scenarios/ with httpx against a running pipeline."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import httpx

from reference.fakes.pipeline import Pipeline
from reference.scenarios import Call, Context, Reply

_counter = itertools.count()


def context_for(pipe: Pipeline) -> Context:
    run = uuid.uuid4().hex[:8]
    return Context(token=lambda sub: pipe.token(sub), unique=lambda: f"{run}-{next(_counter)}",
                   request_timeout_s=pipe.settings.request_timeout_s, job_ms=300)


def httpx_sender(http: httpx.AsyncClient) -> Any:
    async def send(call: Call) -> Reply:
        r = await http.request(call.method, call.path, json=call.json, content=call.content,
                               headers=dict(call.headers))
        is_json = r.headers.get("content-type", "").startswith("application/json")
        return Reply(r.status_code, r.headers, r.json() if r.content and is_json else None)

    return send
