"""Locust runs the journeys of scenarios/ over HTTP (started by `python -m loadtests.run`).

Runs in locust's own process (importing locust patches the standard library with gevent).
Each Server-Timing part (queue, work, notice, total) is recorded as an entry of its own,
request type "timing", beside the HTTP entries; exact values (microseconds) are also kept
for summary.json, since locust rounds entries to whole milliseconds.

Environment: LOADTEST_SCENARIO, LOADTEST_JWT_SECRET, LOADTEST_REQUEST_TIMEOUT_S,
LOADTEST_SUMMARY (where to write the exact figures at the end), LOADTEST_RESPONSES (where to
write one CSV row per HTTP response, for the time series of the report: the same columns as
the wrk script's, plus the client-side latency and whether the status was the expected one).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import uuid
from typing import Any

import jwt
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.stats import StatsEntry

from reference.loadtests.run import percentiles  # stdlib only: safe beside gevent
from reference.scenarios import SCENARIOS, Call, Context, Reply, ScenarioFailure, run_sync

SCENARIO = os.environ.get("LOADTEST_SCENARIO", "lifecycle")
SECRET = os.environ.get("LOADTEST_JWT_SECRET", "")
REQUEST_TIMEOUT_S = float(os.environ.get("LOADTEST_REQUEST_TIMEOUT_S", "30"))
SUMMARY_PATH = os.environ.get("LOADTEST_SUMMARY")
RESPONSES_PATH = os.environ.get("LOADTEST_RESPONSES")
PARTS = ("queue", "work", "notice", "total")
_TIMING = re.compile(r"(\w+);dur=([\d.]+)")

_run = uuid.uuid4().hex[:8]
_counter = itertools.count()
_exact: dict[str, list[float]] = {part: [] for part in ("http", *PARTS)}
_tokens: dict[str, tuple[float, str]] = {}
# (epoch s at the answer, status, expected?, latency ms, total, queue, work, notice; -1: absent)
_rows: list[tuple[float, int, bool, float, float, float, float, float]] = []
_started_at = time.time()


@events.test_start.add_listener
def _test_start(**_: Any) -> None:
    global _started_at
    _started_at = time.time()


def _token(sub: str) -> str:
    now = time.time()
    cached = _tokens.get(sub)
    if cached is None or cached[0] < now + 60:
        claims = {"sub": sub, "exp": int(now) + 3600, "roles": ["users:write"]}
        cached = (now + 3600, jwt.encode(claims, SECRET, algorithm="HS256"))
        _tokens[sub] = cached
    return cached[1]


class ScenarioUser(FastHttpUser):
    wait_time = constant(0)
    connection_timeout = 10.0
    network_timeout = REQUEST_TIMEOUT_S + 10

    def on_start(self) -> None:
        self.ctx = Context(token=_token, unique=lambda: f"{_run}-{next(_counter)}",
                           request_timeout_s=REQUEST_TIMEOUT_S)

    @task
    def journey(self) -> None:
        try:
            run_sync(SCENARIOS[SCENARIO](self.ctx), self._send)
        except ScenarioFailure:
            pass  # already counted as a failed request by _send

    def _send(self, call: Call) -> Reply:
        kwargs: dict[str, Any] = {"headers": dict(call.headers), "name": call.name,
                                  "catch_response": True}
        if call.content is not None:
            kwargs["data"] = call.content
        elif call.json is not None:
            kwargs["json"] = call.json
        started = time.perf_counter()
        with self.client.request(call.method, call.path, **kwargs) as response:
            elapsed_ms = (time.perf_counter() - started) * 1000
            _exact["http"].append(elapsed_ms)
            status = response.status_code or 0
            body: Any = None
            if response.content and "json" in (response.headers.get("content-type") or ""):
                body = json.loads(response.content)
            if status in call.expect:
                response.success()
            else:
                response.failure(f"expected {sorted(call.expect)}, got {status}")
            timing = response.headers.get("server-timing")
        parts = dict.fromkeys(PARTS, -1.0)
        if timing:
            for part, dur in _TIMING.findall(timing):
                if part in PARTS:
                    value = float(dur)
                    parts[part] = value
                    _exact[part].append(value)
                    events.request.fire(request_type="timing", name=part, response_time=value,
                                        response_length=0, exception=None, context={})
        _rows.append((time.time(), status, status in call.expect, elapsed_ms, parts["total"],
                      parts["queue"], parts["work"], parts["notice"]))
        return Reply(status, response.headers, body)


@events.quitting.add_listener
def _write_responses(**_: Any) -> None:
    if not RESPONSES_PATH:
        return
    with open(RESPONSES_PATH, "w") as handle:
        handle.write("thread,t0,t,status,ok,latency,total,queue,work,notice\n")
        for at, status, ok, latency, total, queue, work, notice in _rows:
            handle.write(f"1,{_started_at:.6f},{at - _started_at:.6f},{status},{int(ok)},"
                         f"{latency:.3f},{total:.3f},{queue:.3f},{work:.3f},{notice:.3f}\n")


@events.quitting.add_listener
def _write_summary(environment: Environment, **_: Any) -> None:
    if not SUMMARY_PATH or environment.stats is None:
        return
    http = StatsEntry(environment.stats, "http", "", use_response_times_cache=False)
    for entry in environment.stats.entries.values():
        if entry.method != "timing":
            http.extend(entry)
    duration = max(1e-9, (http.last_request_timestamp or time.time()) - http.start_time)
    summary = {
        "requests": http.num_requests,
        "failures": http.num_failures,
        "duration_measured_s": round(duration, 3),
        "throughput_rps": round(http.num_requests / duration, 1),
        # Exact (locust rounds its entries to whole milliseconds, and to 10 ms above 100).
        "latency_ms": percentiles(_exact["http"]),
        **{f"{part}_ms": percentiles(_exact[part]) for part in PARTS},
    }
    with open(SUMMARY_PATH, "w") as handle:
        json.dump(summary, handle, indent=2)
