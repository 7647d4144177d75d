"""Failover under load: the product on a Redis Cluster and a 3-node RabbitMQ cluster (quorum
queue) while a Redis primary and the RabbitMQ node that leads the queue are SIGKILLed.

The stack is real processes (tests/system/stack.py): one API and two core workers, given the
multi-host AMQP URL of the three nodes and the `redis+cluster://` URL of the six. Sixteen
clients send createUser (each with an email of its own, never retried) and, one request in
five, a short runJob, for LOAD_S seconds. During the load the primary that serves the users'
hash slot is killed (its replica is promoted), then the node that leads the quorum queue (where
the API and the workers are connected too: they all start on the first host of the URL, and a
quorum queue's leader is placed on the node of the client that declares it).

What every answer must be (anything else is a failure, listed with its request id):

- 201 with the user (createUser) or 200 with the job's result (runJob);
- 503 in the error envelope with code `unavailable`: documented as "not accepted";
- 504 with `Location`, which, polled after the load (bounded), resolves to a final `Success`;
- an HTTP answer at all: a request without one (connection error, client timeout) is a failure.

Nothing lost, nothing run twice, checked on the users listed by `GET /users` (all pages):

- every email is listed at most once, and each 201's (or resolved 504's) user is listed under
  its email with the same id: a lost or a second user shows here;
- no 409 (a second run of a createUser whose first run was lost to a failover would meet its
  own email) and no request id finished twice in the workers' logs;
- the number of users equals the number of emails accepted (201, or 504 resolved to Success)
  plus the 503s that did create a user. A 503 may have created one only in this way: the
  publish's confirm was lost, the message was queued anyway, and the API could not write the
  `Fail unavailable` record that would have made the worker skip it; then the request that
  created the user (found through the repository's `req:<request_id>` key) must have a
  `Success` record. A user created by a request whose record says `Fail` was run after it was
  declared not accepted: a failure.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode

from reference.bootstrap import url_hosts
from tests.cluster.rabbit_cluster import LocalRabbitCluster
from tests.cluster.redis_cluster import LocalRedisCluster
from tests.system.stack import SECRET, Stack, stack_env

pytestmark = pytest.mark.cluster

LOAD_S = 25.0
CLIENTS = 16
JOB_EVERY = 5  # one request in five is a runJob
JOB = {"duration_ms": 100, "steps": 2}
REDIS_KILL_AT_S = 6.0
RABBIT_KILL_AT_S = 15.0
ASK_LEADER_S = 5.0  # the leader is asked this long before the kill
REQUEST_TIMEOUT_S = 10  # the API's wait before a 504
PAUSE_AFTER_503_S = 0.25  # clients pause after a 503 (less than its Retry-After, to measure)
SETTLE_TIMEOUT_S = 60.0  # after the load: 504s resolved, queue drained, users listed
QUEUE_STATS_LAG_S = 6.0  # quorum queue counts in list_queues are refreshed every 5 s
SUB = "failover"


@functools.cache
def auth() -> dict[str, str]:
    token = jwt.encode({"sub": SUB, "exp": int(time.time()) + 900, "roles": ["users:write"]},
                       SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Call:
    n: int
    kind: str  # "user" (createUser) or "job" (runJob)
    email: str | None
    started: float  # seconds since the load began
    ended: float = 0.0
    status: int | None = None  # None: no answer
    body: Any = None
    request_id: str | None = None  # X-Request-ID
    location: str | None = None
    no_answer: str | None = None
    resolved: dict[str, Any] | None = None  # the final record read at Location, for a 504


@dataclass
class Fault:
    what: str
    target: str
    killed_at: float  # seconds since the load began
    recovered_after_s: float  # until the replica was primary / the queue had a new leader
    detail: str
    first_success_after_s: float | None = None  # of a createUser sent after the kill


@pytest.fixture
def stack(redis_cluster: LocalRedisCluster, rabbit_cluster: LocalRabbitCluster,
          tmp_path: Path) -> Iterator[Stack]:
    unique = uuid.uuid4().hex[:8]
    env = stack_env(rabbit_cluster.url, redis_cluster.url, f"failover-{unique}",
                    f"fo{unique}:", REFERENCE_QUEUE_TYPE="quorum",
                    REFERENCE_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
                    REFERENCE_CONNECT_TIMEOUT_S="30")
    s = Stack(tmp_path, env)
    try:
        s.serve()
        s.worker("w1", concurrency=8)
        s.worker("w2", concurrency=8)
        yield s
    finally:
        s.stop()


async def test_failover_under_load_loses_nothing_and_runs_nothing_twice(
        stack: Stack, redis_cluster: LocalRedisCluster,
        rabbit_cluster: LocalRabbitCluster) -> None:
    """Killing a Redis primary and the quorum queue's leader node under load leaves every
    request answered with its result, a documented 503, or a 504 that resolves, and no user
    lost or created twice."""
    queue, prefix = stack.env["REFERENCE_QUEUE"], stack.env["REFERENCE_KEY_PREFIX"]
    run = uuid.uuid4().hex[:8]
    calls: list[Call] = []
    faults: list[Fault] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=stack.base_url, limits=limits,
                                 timeout=REQUEST_TIMEOUT_S + 20) as http:
        # Given a stack that answers, with the quorum queue led by the node it uses
        warm = await http.post("/jobs", json=JOB, headers=auth())
        assert warm.status_code == 200, warm.text
        began = time.monotonic()

        # When sixteen clients send requests while a node of each cluster is killed
        counter = itertools.count(1)
        clients = [asyncio.create_task(_client(http, counter, calls, run, began))
                   for _ in range(CLIENTS)]
        try:
            await _inject_faults(stack, redis_cluster, rabbit_cluster, queue, prefix, began,
                                 faults)
        except BaseException:
            for client in clients:
                client.cancel()
            raise
        await asyncio.gather(*clients)
        load_s = time.monotonic() - began

        # Then (after the 504s resolved and the queue drained) every answer is allowed, and
        # the users are exactly those accepted
        settle_by = time.monotonic() + SETTLE_TIMEOUT_S
        await _resolve_timeouts(http, calls, settle_by)
        drained = await asyncio.to_thread(_wait_drained, rabbit_cluster, queue, settle_by)
        _first_success_after(faults, calls)
        evidence = _save_evidence(stack, calls, faults)
        violations: list[str] = [
            f"no createUser sent after the kill of the {f.what} {f.target} succeeded during "
            f"the load: the service did not recover by itself"
            for f in faults if f.first_success_after_s is None]
        if not drained:
            violations.append(f"queue {queue} still held messages {SETTLE_TIMEOUT_S:g} s "
                              f"after the load: {rabbit_cluster.queue_info(queue)}")
        users, unavailable = await _list_users(http, run, settle_by)
        if users is None:
            violations.append(f"GET /users did not answer 200 within {SETTLE_TIMEOUT_S:g} s "
                              f"after the load: {unavailable}")
            counts: Counter[str] = Counter(f"{c.kind} {c.status}" for c in calls)
        else:
            creators = await _creating_requests(redis_cluster.url, prefix)
            found, counts = await _check(http, calls, users, creators)
            violations += found
    finished_twice = {rid: n for rid, n in stack.finished_counts().items() if n > 1}
    violations += [f"request {rid} finished {n} times" for rid, n in finished_twice.items()]

    print(_report(calls, faults, counts, load_s, drained, evidence, rabbit_cluster))
    assert not violations, (
        f"{len(violations)} violations (evidence in {evidence}):\n" + "\n".join(violations[:50])
        + "\n" + _log_tails(stack))


# --- load ------------------------------------------------------------------------------------


async def _client(http: httpx.AsyncClient, counter: Iterator[int], calls: list[Call],
                  run: str, began: float) -> None:
    """One client: a request at a time until LOAD_S, each recorded with its answer."""
    while time.monotonic() - began < LOAD_S:
        n = next(counter)
        body: dict[str, Any]
        if n % JOB_EVERY == 0:
            call = Call(n, "job", None, time.monotonic() - began)
            path, body = "/jobs", JOB
        else:
            email = f"user{n}@{run}.example"
            call = Call(n, "user", email, time.monotonic() - began)
            path, body = "/users", {"name": f"User {n}", "email": email}
        try:
            r = await http.post(path, json=body, headers=auth())
        except httpx.HTTPError as exc:
            call.no_answer = f"{type(exc).__name__}: {exc}"
        else:
            call.status = r.status_code
            call.request_id = r.headers.get("x-request-id")
            call.location = r.headers.get("location")
            try:
                call.body = r.json()
            except ValueError:
                call.body = r.text[:500]
        call.ended = time.monotonic() - began
        calls.append(call)
        if call.status == 503:
            await asyncio.sleep(PAUSE_AFTER_503_S)


async def _inject_faults(stack: Stack, redis_cluster: LocalRedisCluster,
                         rabbit_cluster: LocalRabbitCluster, queue: str, prefix: str,
                         began: float, faults: list[Fault]) -> None:
    """Kill the primary of the users' slot at REDIS_KILL_AT_S, wait for its replica's
    promotion; kill the queue's leader node at RABBIT_KILL_AT_S, wait for a new leader."""
    await asyncio.sleep(max(0.0, began + REDIS_KILL_AT_S - time.monotonic()))
    users_key = f"{prefix}{{reference:users}}:next_id"
    primary = await asyncio.to_thread(redis_cluster.primary_for_key, users_key)
    killed = time.monotonic()
    await asyncio.to_thread(redis_cluster.kill, primary)
    promoted = await asyncio.to_thread(redis_cluster.wait_promoted, primary, 30)
    faults.append(Fault("redis primary", f"127.0.0.1:{primary} (serves the users' slot)",
                        killed - began, time.monotonic() - killed,
                        f"replica 127.0.0.1:{promoted} promoted"))

    # Ask first (rabbitmqctl takes a second or more under load), then kill on time.
    await asyncio.sleep(max(0.0, began + RABBIT_KILL_AT_S - ASK_LEADER_S - time.monotonic()))
    info = await asyncio.to_thread(rabbit_cluster.queue_info, queue)
    assert info is not None and info["type"] == "quorum" and len(info["online"]) == 3, info
    leader = rabbit_cluster.leader_of(info)
    assert leader is not None, info
    pids = [p.popen.pid for p in stack.procs]
    before = await asyncio.to_thread(rabbit_cluster.connected_nodes, pids)
    await asyncio.sleep(max(0.0, began + RABBIT_KILL_AT_S - time.monotonic()))
    killed = time.monotonic()
    killed_epoch = await asyncio.to_thread(rabbit_cluster.kill, leader)
    new_leader = await asyncio.to_thread(rabbit_cluster.wait_leader, queue, not_on=leader)
    # The election's time from the new leader's log: rabbitmqctl itself is slow under load.
    elected = rabbit_cluster.elected_at(queue, new_leader, killed_epoch)
    recovered = elected - killed_epoch if elected else time.monotonic() - killed
    after = await asyncio.to_thread(rabbit_cluster.connected_nodes, pids)
    faults.append(Fault("rabbitmq node", f"rc{leader} (the queue's leader)", killed - began,
                        recovered, f"rc{new_leader} elected leader; AMQP connections of the "
                        f"stack per node before {before}, after {after}"))


def _first_success_after(faults: list[Fault], calls: list[Call]) -> None:
    for fault in faults:
        ends = [c.ended for c in calls
                if c.kind == "user" and c.status == 201 and c.started >= fault.killed_at]
        fault.first_success_after_s = min(ends) - fault.killed_at if ends else None


# --- after the load --------------------------------------------------------------------------


async def _resolve_timeouts(http: httpx.AsyncClient, calls: list[Call],
                            deadline: float) -> None:
    """Poll the Location of every 504 until its record is final (until `deadline`)."""
    pending = [c for c in calls if c.status == 504 and c.location]
    while pending and time.monotonic() < deadline:
        for call in list(pending):
            assert call.location is not None
            r = await http.get(call.location, headers=auth())
            if r.status_code == 200 and r.json().get("status") in {"Success", "Fail"}:
                call.resolved = r.json()
                pending.remove(call)
        if pending:
            await asyncio.sleep(0.5)


def _wait_drained(rabbit_cluster: LocalRabbitCluster, queue: str, deadline: float) -> bool:
    """Wait (until `deadline`) until the queue holds no message, ready or unacknowledged, for
    longer than RabbitMQ's quorum queue statistics lag (they are refreshed every 5 s)."""
    empty_since: float | None = None
    while time.monotonic() < deadline:
        info = rabbit_cluster.queue_info(queue)
        if info is not None and info.get("messages") == 0:
            empty_since = empty_since or time.monotonic()
            if time.monotonic() - empty_since > QUEUE_STATS_LAG_S:
                return True
        else:
            empty_since = None
        time.sleep(0.5)
    return False


async def _list_users(http: httpx.AsyncClient, run: str,
                      deadline: float) -> tuple[list[dict[str, Any]] | None, str]:
    """Every user of this run, through GET /users, page after page; a page that answers
    503 is asked again until `deadline`. (None, the last answer) if it never answered 200."""
    users: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        r = await http.get("/users", params=params, headers=auth())
        if r.status_code != 200:
            if r.status_code != 503 or time.monotonic() > deadline:
                return None, f"{r.status_code} {r.text[:300]}"
            await asyncio.sleep(0.5)
            continue
        page = r.json()
        users += [u for u in page["items"] if u["email"].endswith(f"@{run}.example")]
        cursor = page["next_cursor"]
        if cursor is None:
            return users, ""


async def _creating_requests(store_url: str, prefix: str) -> dict[int, str]:
    """user id -> the request id that created it, from the repository's `req:` keys."""
    pattern = f"{prefix}{{reference:users}}:req:*"
    nodes = [ClusterNode(host, port or 6379) for host, port in url_hosts(store_url)]
    client = RedisCluster(startup_nodes=nodes, decode_responses=True)
    try:
        found: dict[int, str] = {}
        async for key in client.scan_iter(match=pattern, count=1000):
            value = await client.get(key)
            if value is not None:
                found[int(value)] = key.rpartition(":req:")[2]
        return found
    finally:
        await client.aclose()


async def _check(http: httpx.AsyncClient, calls: list[Call], users: list[dict[str, Any]],
                 creators: dict[int, str]) -> tuple[list[str], Counter[str]]:
    """The rules of the module's docstring; the violations, and counts for the report."""
    violations: list[str] = []
    counts: Counter[str] = Counter()
    accepted: dict[str, int] = {}  # email -> user id, from a 201 or a resolved 504
    answered_503: set[str] = set()
    for c in calls:
        what = f"#{c.n} {c.kind} {c.email or ''} (X-Request-ID {c.request_id})"
        counts[f"{c.kind} {c.status if c.status is not None else 'no answer'}"] += 1
        error = c.body.get("error", {}) if isinstance(c.body, dict) else {}
        if c.status is None:
            violations.append(f"{what}: no answer: {c.no_answer}")
        elif c.kind == "user" and c.status == 201:
            if not (isinstance(c.body, dict) and c.body.get("email") == c.email
                    and isinstance(c.body.get("id"), int)
                    and c.location == f"/users/{c.body['id']}"):
                violations.append(f"{what}: 201 without its user: {c.body} {c.location}")
            else:
                accepted[c.email or ""] = c.body["id"]
        elif c.kind == "job" and c.status == 200:
            if c.body != JOB:
                violations.append(f"{what}: 200 without the job's result: {c.body}")
        elif c.status == 503:
            if error.get("code") != "unavailable":
                violations.append(f"{what}: 503 without the unavailable envelope: {c.body}")
            if c.email:
                answered_503.add(c.email)
        elif c.status == 504:
            record = c.resolved
            if not c.location:
                violations.append(f"{what}: 504 without Location: {c.body}")
            elif record is None:
                violations.append(f"{what}: 504 whose {c.location} never became final")
            elif record.get("status") != "Success":
                violations.append(f"{what}: 504 resolved to {record}")
            else:
                counts[f"{c.kind} 504 resolved"] += 1
                if c.kind == "user":
                    accepted[c.email or ""] = record["result"]["id"]
        else:
            violations.append(f"{what}: answered {c.status}: {c.body}")

    listed: dict[str, list[int]] = {}
    for user in users:
        listed.setdefault(user["email"], []).append(user["id"])
    for email, ids in listed.items():
        if len(ids) > 1:
            violations.append(f"{email} created {len(ids)} times: ids {ids}")
    for email, uid in accepted.items():
        if listed.get(email) != [uid]:
            violations.append(f"{email} accepted as user {uid}, listed as {listed.get(email)}")
    created_by_503 = 0
    for email in set(listed) - set(accepted):
        uid = listed[email][0]
        rid = creators.get(uid)
        if email not in answered_503:
            violations.append(f"{email} (user {uid}, request {rid}) exists but was not accepted")
            continue
        record = (await http.get(f"/requests/{rid}", headers=auth())).json() if rid else None
        if record is None or record.get("status") != "Success":
            violations.append(f"{email} answered 503 yet user {uid} exists; its request {rid} "
                              f"has the record {record}")
        else:
            created_by_503 += 1
    counts["users listed"] = len(users)
    counts["users accepted"] = len(accepted)
    counts["users created by a 503 (lost confirm)"] = created_by_503
    if len(users) != len(accepted) + created_by_503:
        violations.append(f"{len(users)} users listed, {len(accepted)} accepted and "
                          f"{created_by_503} created by a 503")
    return violations, counts


# --- report ----------------------------------------------------------------------------------


def _report(calls: list[Call], faults: list[Fault], counts: Counter[str], load_s: float,
            drained: bool, evidence: Path, rabbit_cluster: LocalRabbitCluster) -> str:
    lines = [f"\nfailover: {len(calls)} requests from {CLIENTS} clients in {load_s:.1f} s "
             f"(RabbitMQ cluster formed in {rabbit_cluster.started_in_s or 0:.1f} s); "
             f"queue drained after: {drained}"]
    lines += [f"  {key}: {n}" for key, n in sorted(counts.items())]
    for f in faults:
        first = (f"{f.first_success_after_s:.2f} s" if f.first_success_after_s is not None
                 else "never")
        window = [c for c in calls
                  if f.killed_at <= c.started <= f.killed_at + (f.first_success_after_s or 0)]
        statuses = Counter(str(c.status) for c in window)
        lines.append(f"  {f.what} {f.target} killed at {f.killed_at:.1f} s: {f.detail} after "
                     f"{f.recovered_after_s:.2f} s; first createUser 201 sent after the kill "
                     f"answered {first} after it; answers to requests sent in between: "
                     f"{dict(statuses)}")
    slow = sorted((c.ended - c.started for c in calls if c.status in (200, 201)), reverse=True)
    if slow:
        lines.append(f"  slowest success {slow[0]:.2f} s; p99 "
                     f"{slow[len(slow) // 100]:.2f} s")
    lines.append(f"  evidence: {evidence}")
    return "\n".join(lines)


def _save_evidence(stack: Stack, calls: list[Call], faults: list[Fault]) -> Path:
    path = stack.tmp / "calls.jsonl"
    with path.open("w") as out:
        for f in faults:
            out.write(json.dumps({"fault": asdict(f)}) + "\n")
        for c in calls:
            out.write(json.dumps(asdict(c)) + "\n")
    return stack.tmp


def _log_tails(stack: Stack) -> str:
    """Each process's warnings and errors, one line per kind (ids and numbers masked)."""
    parts = []
    for proc in stack.procs:
        kinds: Counter[str] = Counter()
        first: dict[str, str] = {}
        for line in proc.text().splitlines():
            if " WARNING " in line or " ERROR " in line or line.startswith("503: "):
                message = line.split(": ", 1)[-1] if " WARNING " in line or " ERROR " in line \
                    else line
                kind = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+(\.\d+)?", "N", message)[:160]
                kinds[kind] += 1
                first.setdefault(kind, line[:300])
        parts.append(f"--- {proc.name} ({proc.log}): warnings and errors ---\n" + "\n".join(
            f"{n:5d} x {first[kind]}" for kind, n in kinds.most_common(12)))
    return "\n".join(parts)
