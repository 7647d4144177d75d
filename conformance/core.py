"""`reference conformance core -- CMD [ARGS...]`: check a core worker, in any language, against
the contract (contract §2, §4) on real RabbitMQ and Redis.

The runner starts CMD (`--instances` copies) with these variables set to names of its own:

- `REFERENCE_BROKER_URL`, `REFERENCE_STORE_URL`: the servers (`--amqp-url`, `--redis-url`);
- `REFERENCE_QUEUE`: a fresh queue `conformance_<hex>`; its dead-letter queue is `<queue>.dlq`;
- `REFERENCE_KEY_PREFIX`: a fresh prefix `conformance:<hex>:`; a record lives under
  `<prefix><request_id>`, and every other key the core writes should be under the prefix too;
- `REFERENCE_CLAIM_TTL_S` (2) and `REFERENCE_DELIVERY_LIMIT` (2): a core should honour them
  (the kill checks wait for a dead instance's claim to expire, and kill.delivery_limit kills
  every start of a job and expects it given up after 2 starts: Fail and dead-lettered; a core
  that ignores the claim TTL needs a longer `--timeout`); `REFERENCE_SHUTDOWN_TIMEOUT_S` (2)
  shortens the stop.

Then it acts as the API does: it declares the queue with the API's arguments, writes `Queued`
records, publishes messages (persistent, `application/json`, `message_id` and
`correlation_id` = `request_id`, publisher confirms), and reads the records back. Keys in the
example domain's namespace (`<prefix>{reference:users}:`, `--domain-namespace`) are the users'
own data and need no TTL, unless their name holds a request id; every other key does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiormq
import orjson
import redis.asyncio as aioredis

from reference.actions import ActionRegistry, builtin
from reference.adapters.rabbitmq import RabbitMQBroker
from reference.adapters.redis_keys import USERS_NAMESPACE
from reference.adapters.redis_results import RedisResultStore
from reference.clock import now_ms
from reference.conformance.report import CheckFailed, Report
from reference.messages import Principal, RequestMessage, encode
from reference.records import FINAL_STATUSES, QUEUED, MalformedRecord, ResultRecord

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DOMAIN_NAMESPACE = USERS_NAMESPACE  # contract §5: `{reference:users}:`
CLAIM_TTL_S = 2
DELIVERY_LIMIT = 2  # starts a request may have; the kill check needs 2
SHUTDOWN_TIMEOUT_S = 2
RESULT_TTL_S = 3600.0
SUB = "conformance"
# The roles of contract §8's default policy: user writes need `users:write` (the core gets no
# REFERENCE_ROLES_POLICY, so the defaults apply).
PRINCIPAL = Principal(SUB, ("users:write",))
POLL_S = 0.01
SETTLE_S = 0.5  # after the queue is empty and a probe finished: time for stray copies to act
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL
CLEANUP_S = 10.0
LOG_TAIL_LINES = 20
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The error codes of contract §4, and runJob's (§4).
KNOWN_CODES = frozenset({"validation", "not_found", "conflict", "forbidden", "unknown_action",
                         "deadline_exceeded", "internal", "job_failed"})

Record = dict[str, Any]


@dataclass
class CoreOptions:
    cmd: list[str]
    amqp_url: str = DEFAULT_AMQP_URL
    redis_url: str = DEFAULT_REDIS_URL
    timeout_s: float = 15.0  # bound of every single wait
    instances: int = 2
    junit_xml: str | None = None
    domain_namespace: str = DOMAIN_NAMESPACE


# --- the core's processes ---------------------------------------------------------------------


@dataclass
class Instance:
    number: int
    popen: subprocess.Popen[bytes]
    log: Path
    killed: bool = False  # by the runner, on purpose

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def pids(self) -> set[int]:
        """The process and everything in its process group (CMD may be a wrapper)."""
        pids = {self.popen.pid}
        with contextlib.suppress(OSError):
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    with contextlib.suppress(OSError):
                        if os.getpgid(int(entry)) == self.popen.pid:
                            pids.add(int(entry))
        return pids

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def tail(self, lines: int = LOG_TAIL_LINES) -> list[str]:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]


# --- the run ----------------------------------------------------------------------------------


@dataclass
class CoreRun:
    options: CoreOptions
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    instances: list[Instance] = field(default_factory=list)
    finals: dict[str, Record] = field(default_factory=dict)  # every final record seen
    actions_of: dict[str, str] = field(default_factory=dict)  # request id -> action sent
    principals: dict[str, str] = field(default_factory=dict)  # request id -> sub sent
    crashes: list[str] = field(default_factory=list)  # instances that exited on their own
    users: dict[str, Record] = field(default_factory=dict)  # made by the actions checks
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.queue = f"conformance_{self.token}"
        self.dlq = self.queue + ".dlq"
        self.prefix = f"conformance:{self.token}:"
        self.logdir = Path(tempfile.mkdtemp(prefix="conformance-core-"))
        self._started = 0
        self._broker: RabbitMQBroker | None = None
        self._amqp: Any = None
        self._channel: Any = None
        self._redis: aioredis.Redis | None = None
        self._results: RedisResultStore | None = None

    # --- connections ----------------------------------------------------------------------

    @property
    def broker(self) -> RabbitMQBroker:
        assert self._broker is not None
        return self._broker

    @property
    def redis(self) -> aioredis.Redis:
        assert self._redis is not None
        return self._redis

    @property
    def results(self) -> RedisResultStore:
        assert self._results is not None
        return self._results

    async def open(self) -> None:
        """Connect as the API would, and declare the queue (and its DLQ) with its arguments."""
        self._redis = aioredis.from_url(self.options.redis_url, socket_timeout=5,
                                        socket_connect_timeout=5)
        await self._redis.ping()
        self._results = RedisResultStore(self._redis, key_prefix=self.prefix)
        self._broker = RabbitMQBroker(self.options.amqp_url)
        await self._broker.connect()
        await self._broker.declare_queue(self.queue)
        self._amqp = await asyncio.wait_for(aiormq.connect(self.options.amqp_url), 10)
        self._channel = await self._amqp.channel()

    async def close(self) -> None:
        """Stop every process started, then delete the queue, the DLQ and every key (each
        step bounded: cleaning up after a broken server must not hang either)."""
        await self.stop_instances()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLEANUP_S):
                if self._amqp is None or self._amqp.is_closed:
                    self._amqp = await aiormq.connect(self.options.amqp_url)
                channel = await self._amqp.channel()
                for name in (self.queue, self.dlq):
                    await channel.queue_delete(name)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._amqp.close(), CLEANUP_S)
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._broker.close(), CLEANUP_S)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLEANUP_S):
                    keys = [k async for k in self._redis.scan_iter(match=self.prefix + "*",
                                                                    count=1000)]
                    for i in range(0, len(keys), 500):
                        await self._redis.unlink(*keys[i:i + 500])
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._redis.aclose(), CLEANUP_S)

    async def queue_counts(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue."""
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._amqp.channel()
        ok = await self._channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0), int(ok.consumer_count or 0)

    # --- processes ------------------------------------------------------------------------

    def core_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("REFERENCE_QUEUE_TYPE", "REFERENCE_ROLES_POLICY")}
        env.update({
            "REFERENCE_BROKER_URL": self.options.amqp_url,
            "REFERENCE_STORE_URL": self.options.redis_url,
            "REFERENCE_QUEUE": self.queue,
            "REFERENCE_KEY_PREFIX": self.prefix,
            "REFERENCE_CLAIM_TTL_S": str(CLAIM_TTL_S),
            "REFERENCE_DELIVERY_LIMIT": str(DELIVERY_LIMIT),
            "REFERENCE_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
        })
        return env

    def spawn(self) -> Instance:
        self._started += 1
        log = self.logdir / f"core-{self._started}.log"
        with log.open("wb") as handle:
            try:
                popen = subprocess.Popen(self.options.cmd, env=self.core_env(),
                                         stdin=subprocess.DEVNULL, stdout=handle,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise CheckFailed(f"cannot start {self.options.cmd[0]!r}: {exc}") from None
        instance = Instance(self._started, popen, log)
        self.instances.append(instance)
        return instance

    def reap(self) -> None:
        """Forget instances that ended; those that ended on their own are crashes."""
        for instance in [i for i in self.instances if not i.alive]:
            self.instances.remove(instance)
            if not instance.killed:
                tail = " | ".join(instance.tail(5))
                self.crashes.append(f"core instance #{instance.number} exited with code "
                                    f"{instance.popen.returncode}; its last lines: {tail}")

    def check_alive(self) -> None:
        if not any(i.alive for i in self.instances):
            self.reap()
            why = self.crashes[-1] if self.crashes else "no core instance is running"
            raise CheckFailed(why)

    async def ensure_instances(self) -> None:
        """`--instances` live instances, each consuming the queue."""
        self.reap()
        while len(self.instances) < self.options.instances:
            self.spawn()
        await self.wait_consuming(len(self.instances))

    async def wait_consuming(self, count: int) -> None:
        deadline = time.monotonic() + self.options.timeout_s
        while True:
            _, consumers = await self.queue_counts(self.queue)
            if consumers >= count:
                return
            for instance in self.instances:
                if not instance.alive and not instance.killed:
                    self.reap()
                    raise CheckFailed(self.crashes[-1])
            if time.monotonic() > deadline:
                raise CheckFailed(
                    f"{consumers} consumers on {self.queue} after {self.options.timeout_s:g} s, "
                    f"expected {count}: does the core consume REFERENCE_QUEUE?")
            await asyncio.sleep(0.05)

    async def stop_instances(self) -> None:
        for instance in self.instances:
            if instance.alive:
                instance.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for instance in self.instances:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(instance.popen.wait,
                                        max(0.0, deadline - time.monotonic()))
        for instance in self.instances:
            if instance.alive:
                instance.signal(signal.SIGKILL)
        for instance in self.instances:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(instance.popen.wait, 5)

    async def kill(self, instance: Instance) -> None:
        """SIGKILL, and wait until it is gone."""
        instance.killed = True
        instance.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(instance.popen.wait, STOP_GRACE_S)

    # --- the producer's side --------------------------------------------------------------

    async def submit(self, action: str, params: dict[str, Any], *, rid: str | None = None,
                     version: int = 1, deadline: int | None = None, copies: int = 1,
                     principal: Principal | None = PRINCIPAL) -> str:
        """As the API does: a Queued record, then the message (confirmed by the broker).
        With `principal` None, as a trusted producer: no principal, no owner."""
        rid = rid or str(uuid.uuid4())
        now = now_ms()
        owner = principal.sub if principal else None
        queued = ResultRecord(status=QUEUED, detail="queued", owner=owner, queued_at=now,
                              updated_at=now)
        await self.results.create(rid, queued, ttl_s=RESULT_TTL_S)
        message = RequestMessage(action, params, rid, version=version, principal=principal,
                                 deadline=deadline, queued_at=now)
        body = encode(message)
        self.actions_of[rid] = action
        if principal is not None:
            self.principals[rid] = principal.sub
        for _ in range(copies):
            await self.broker.publish(self.queue, body, message_id=rid)
        return rid

    async def publish_raw(self, body: bytes, message_id: str) -> None:
        await self.broker.publish(self.queue, body, message_id=message_id)

    async def read(self, rid: str) -> Record | None:
        return parse_record(rid, await self.redis.get(self.prefix + rid))

    async def wait_finals(self, rids: Sequence[str], timeout_s: float | None = None
                          ) -> list[Record]:
        """The final records of `rids`, or CheckFailed once the bound has passed."""
        bound = self.options.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + bound
        keys = [self.prefix + rid for rid in rids]
        while True:
            raws = await self.redis.mget(keys)
            records = [parse_record(rid, raw) for rid, raw in zip(rids, raws, strict=True)]
            if all(r is not None and r["status"] in FINAL_STATUSES for r in records):
                finals = [r for r in records if r is not None]
                self.finals.update(zip(rids, finals, strict=True))
                return finals
            self.check_alive()
            if time.monotonic() > deadline:
                waiting = [(rid, r) for rid, r in zip(rids, records, strict=True)
                           if r is None or r["status"] not in FINAL_STATUSES]
                raise CheckFailed(await self._stuck(waiting, len(rids), bound))
            await asyncio.sleep(POLL_S)

    async def wait_final(self, rid: str, timeout_s: float | None = None) -> Record:
        return (await self.wait_finals([rid], timeout_s))[0]

    async def call(self, action: str, params: dict[str, Any], **kwargs: Any) -> Record:
        return await self.wait_final(await self.submit(action, params, **kwargs))

    async def _stuck(self, waiting: list[tuple[str, Record | None]], total: int,
                     bound: float) -> str:
        rid, record = waiting[0]
        action = self.actions_of.get(rid, "?")
        status = "missing" if record is None else record["status"]
        some = f"{len(waiting)} of {total} requests" if total > 1 else "the request"
        why = f"{some} not final after {bound:g} s (e.g. {action} {rid}: {status})"
        if await self.redis.exists(rid):
            why += ("; the core wrote the record without the key prefix: it must honour "
                    "REFERENCE_KEY_PREFIX")
        elif status == QUEUED:
            why += "; the core never wrote Running"
        return why

    async def list_all(self) -> list[Record]:
        """Every user, through listUsers pages of 100."""
        users: list[Record] = []
        cursor: str | None = None
        for _ in range(1000):
            params: dict[str, Any] = {"limit": 100}
            if cursor is not None:
                params["cursor"] = cursor
            page = expect_success(await self.call("listUsers", params), "listUsers")
            users.extend(page["items"])
            cursor = page.get("next_cursor")
            if cursor is None:
                return users
        raise CheckFailed("listUsers gave more than 1000 pages of 100")

    async def settle(self) -> None:
        """Wait until the queue is empty and a later request finished, then a little more:
        copies still in flight have had their chance to act."""
        deadline = time.monotonic() + self.options.timeout_s
        while (await self.queue_counts(self.queue))[0] > 0:
            if time.monotonic() > deadline:
                raise CheckFailed(f"the queue did not drain within {self.options.timeout_s:g} s")
            await asyncio.sleep(0.02)
        expect_success(await self.call("runJob", {"duration_ms": 0, "steps": 1}), "runJob")
        await asyncio.sleep(SETTLE_S)

    async def drain_dlq(self) -> list[bytes]:
        bodies: list[bytes] = []
        while True:
            delivery = await self.broker.get(self.dlq)
            if delivery is None:
                return bodies
            bodies.append(delivery.body)
            await delivery.ack()

    def email(self, tag: str) -> str:
        return f"{tag}-{self.token}@example.com"


# --- record checks ----------------------------------------------------------------------------


def parse_record(rid: str, raw: bytes | str | None) -> Record | None:
    """A stored record as a dict, checked against contract §4 (CheckFailed if it is no record)."""
    if raw is None:
        return None
    try:
        ResultRecord.from_json(raw)
    except MalformedRecord as exc:
        raise CheckFailed(f"the record of {rid} is not a valid result record: {exc}: "
                          f"{raw[:200]!r}") from None
    data: Record = orjson.loads(raw)
    if not isinstance(data.get("detail"), str):
        raise CheckFailed(f"the record of {rid} has no string detail: {raw[:200]!r}")
    return data


def _show(record: Record) -> str:
    if record["status"] == "Fail":
        return f"Fail {record.get('error')}"
    return f"{record['status']} {str(record.get('result'))[:120]}"


_BUILTIN: list[ActionRegistry] = []


def expect_success(record: Record, action: str) -> Any:
    """The result of a Success record, checked as the API checks it (the action's result
    model, reference/builtin_actions.py)."""
    if record["status"] != "Success":
        raise CheckFailed(f"{action} ended {_show(record)}, expected Success")
    result = record.get("result")
    if not _BUILTIN:
        _BUILTIN.append(builtin())
    try:
        _BUILTIN[0].lookup(action.split()[0]).check_result(result)
    except MalformedRecord as exc:
        raise CheckFailed(f"{action} Success breaks the contract: {exc} "
                          f"(result {str(result)[:200]})") from None
    return result


def expect_fail(record: Record, action: str, code: str, field: str | None = None) -> None:
    if record["status"] != "Fail":
        raise CheckFailed(f"{action} ended {_show(record)}, expected Fail {code}")
    error = record.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        raise CheckFailed(f"{action} Fail has no error {{code, message}}: {error}")
    if error.get("code") != code:
        raise CheckFailed(f"{action} failed with code {error.get('code')!r}, expected {code!r} "
                          f"({error.get('message')})")
    if field is not None and error.get("field") != field and field not in error["message"]:
        raise CheckFailed(f"{action} {code} error does not name the field {field!r}: {error}")


def expect_user(result: Any, *, name: str, email: str, user_id: int | None = None,
                what: str = "user") -> None:
    got = (result.get("name"), result.get("email"))
    if got != (name, email) or (user_id is not None and result.get("id") != user_id):
        raise CheckFailed(f"{what} is {result}, expected id {user_id or 'new'}, name {name!r}, "
                          f"email {email!r}")


# --- the checks -------------------------------------------------------------------------------


Check = Callable[[CoreRun], Awaitable[None]]


async def check_startup(run: CoreRun) -> None:
    """The instances consume the queue and write a final record for a first request (of any
    status: actions.runJob judges it)."""
    await run.ensure_instances()
    await run.call("runJob", {"duration_ms": 0, "steps": 1})


async def check_create(run: CoreRun) -> None:
    for tag in ("a", "b", "c"):
        name, email = f"Conformance {tag.upper()}", run.email(tag)
        result = expect_success(await run.call("createUser", {"name": name, "email": email}),
                                "createUser")
        expect_user(result, name=name, email=email, what="the created user")
        run.users[tag] = result
    ids = [u["id"] for u in run.users.values()]
    if len(set(ids)) != len(ids):
        raise CheckFailed(f"three createUser requests gave ids {ids}: not distinct")


def _user(run: CoreRun, tag: str) -> Record:
    if tag not in run.users:
        raise CheckFailed("needs the users of actions.createUser, which failed")
    return run.users[tag]


async def check_get(run: CoreRun) -> None:
    a = _user(run, "a")
    result = expect_success(await run.call("getUser", {"id": a["id"]}), "getUser")
    expect_user(result, name=a["name"], email=a["email"], user_id=a["id"], what="getUser")


async def check_list(run: CoreRun) -> None:
    mine = {_user(run, t)["id"]: _user(run, t) for t in ("a", "b", "c")}
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = expect_success(await run.call("listUsers", params), "listUsers")
        pages += 1
        if len(page["items"]) > 2:
            raise CheckFailed(f"listUsers with limit 2 gave {len(page['items'])} items")
        for item in page["items"]:
            if item["id"] in mine:
                expect_user(item, name=mine[item["id"]]["name"],
                            email=mine[item["id"]]["email"], user_id=item["id"],
                            what="a listed user")
            seen.append(item["id"])
        cursor = page.get("next_cursor")
        if cursor is None:
            break
        if pages >= 500:
            raise CheckFailed("listUsers with limit 2 did not end within 500 pages")
    if seen != sorted(set(seen)):
        raise CheckFailed(f"listUsers pages are not in increasing id order without repeats: "
                          f"{seen[:20]}")
    if pages < 2:
        raise CheckFailed(f"listUsers with limit 2 over {len(seen)} users gave one page")
    missing = sorted(set(mine) - set(seen))
    if missing:
        raise CheckFailed(f"listUsers paging missed the users {missing}")


async def check_update(run: CoreRun) -> None:
    a = _user(run, "a")
    name = "Conformance A renamed"
    result = expect_success(await run.call("updateUser", {"id": a["id"], "name": name}),
                            "updateUser")
    expect_user(result, name=name, email=a["email"], user_id=a["id"], what="updateUser (name)")
    email = run.email("a2")
    result = expect_success(await run.call("updateUser", {"id": a["id"], "email": email}),
                            "updateUser")
    expect_user(result, name=name, email=email, user_id=a["id"], what="updateUser (email)")
    got = expect_success(await run.call("getUser", {"id": a["id"]}), "getUser")
    expect_user(got, name=name, email=email, user_id=a["id"], what="getUser after updateUser")
    run.users["a"] = got


async def check_delete(run: CoreRun) -> None:
    c = _user(run, "c")
    expect_success(await run.call("deleteUser", {"id": c["id"]}), "deleteUser")
    expect_fail(await run.call("getUser", {"id": c["id"]}), "getUser after deleteUser",
                "not_found")
    expect_fail(await run.call("deleteUser", {"id": c["id"]}), "deleteUser twice", "not_found")
    del run.users["c"]


async def check_run_job(run: CoreRun) -> None:
    for params, expected in (({"duration_ms": 50, "steps": 2}, {"duration_ms": 50, "steps": 2}),
                             ({"duration_ms": 0}, {"duration_ms": 0, "steps": 10})):
        record = await run.call("runJob", params)
        result = expect_success(record, "runJob")
        if {k: result.get(k) for k in expected} != expected:
            raise CheckFailed(f"runJob {params} gave {result}, expected {expected}")


async def check_validation(run: CoreRun) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("createUser", {"name": "X", "email": "not-an-email"}, "email"),
        ("createUser", {"name": "X"}, "email"),
        ("createUser", {"email": run.email("v")}, "name"),
        ("getUser", {"id": "one"}, "id"),
        ("updateUser", {"id": 0, "name": "X"}, "id"),
        ("runJob", {"duration_ms": -1}, "duration_ms"),
        ("runJob", {"duration_ms": 0, "steps": 0}, "steps"),
    ]
    rids = [await run.submit(action, params) for action, params, _ in cases]
    for (action, params, name), record in zip(cases, await run.wait_finals(rids), strict=True):
        expect_fail(record, f"{action} {params}", "validation", field=name)


async def check_not_found(run: CoreRun) -> None:
    missing = 9_000_000_000_000
    expect_fail(await run.call("getUser", {"id": missing}), "getUser of no user", "not_found")
    expect_fail(await run.call("updateUser", {"id": missing, "name": "X"}),
                "updateUser of no user", "not_found")


async def check_conflict(run: CoreRun) -> None:
    a, b = _user(run, "a"), _user(run, "b")
    expect_fail(await run.call("createUser", {"name": "Dup", "email": b["email"]}),
                "createUser with a taken email", "conflict")
    expect_fail(await run.call("updateUser", {"id": a["id"], "email": b["email"]}),
                "updateUser to a taken email", "conflict")


async def check_job_failed(run: CoreRun) -> None:
    expect_fail(await run.call("runJob", {"duration_ms": 0, "steps": 1, "fail": True}),
                "runJob fail=true", "job_failed")


async def check_progress(run: CoreRun) -> None:
    steps, duration = 4, 1200
    rid = await run.submit("runJob", {"duration_ms": duration, "steps": steps})
    samples: list[Record] = []
    deadline = time.monotonic() + run.options.timeout_s + duration / 1000
    while True:
        record = await run.read(rid)
        if record is not None and record["status"] in FINAL_STATUSES:
            break
        if record is not None and record["status"] == "Running":
            samples.append(record)
        run.check_alive()
        if time.monotonic() > deadline:
            raise CheckFailed(f"runJob of {duration} ms not final within "
                              f"{run.options.timeout_s:g} s more")
        await asyncio.sleep(0.02)
    final = await run.wait_final(rid)
    expect_success(final, "runJob")
    if final.get("progress") != 100:
        raise CheckFailed(f"the Success record of runJob has progress {final.get('progress')}, "
                          f"expected 100")
    values = [s.get("progress") for s in samples]
    if not samples:
        raise CheckFailed(f"no Running record seen during a {duration} ms runJob")
    numbers = [v for v in values if isinstance(v, int | float)]
    if len(numbers) != len(values):
        raise CheckFailed(f"Running records without progress: {values[:10]}")
    if numbers != sorted(numbers):
        raise CheckFailed(f"progress went down: {_runs(numbers)}")
    distinct = sorted(set(numbers))
    if len(distinct) < 2 or not any(0 < v < 100 for v in distinct):
        raise CheckFailed(f"progress seen while running: {distinct}; expected it to rise in "
                          f"steps of {100 // steps}")
    allowed = {0} | {100 * k / steps for k in range(1, steps + 1)}
    odd = [v for v in distinct if min(abs(v - a) for a in allowed) > 1]
    if odd:
        raise CheckFailed(f"progress {odd} is not 100 * step / steps for {steps} steps")
    stamps = [s["updated_at"] for s in samples if isinstance(s.get("updated_at"), int | float)]
    if stamps != sorted(stamps):
        raise CheckFailed("updated_at went back between progress updates")


def _runs(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return out


async def check_roles(run: CoreRun) -> None:
    """A principal without the roles an action needs gets Fail `forbidden` and changes
    nothing; a message without a principal comes from a trusted producer."""
    a = _user(run, "a")
    bare = Principal(SUB)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("createUser", {"name": "No Role", "email": run.email("no-role")}),
        ("updateUser", {"id": a["id"], "name": "No Role"}),
        ("deleteUser", {"id": a["id"]}),
    ]
    for action, params in cases:
        expect_fail(await run.call(action, params, principal=bare),
                    f"{action} by a principal without users:write", "forbidden")
    got = expect_success(await run.call("getUser", {"id": a["id"]}, principal=bare),
                         "getUser by a principal without roles")
    expect_user(got, name=a["name"], email=a["email"], user_id=a["id"],
                what="the user after refused writes")
    name, email = "Trusted Producer", run.email("trusted")
    result = expect_success(await run.call("createUser", {"name": name, "email": email},
                                           principal=None),
                            "createUser without a principal (a trusted producer)")
    expect_user(result, name=name, email=email)


async def check_deadline(run: CoreRun) -> None:
    past = int(now_ms()) - 60_000
    expect_fail(await run.call("runJob", {"duration_ms": 0}, deadline=past),
                "runJob with a deadline a minute ago", "deadline_exceeded")
    future = int(now_ms()) + 60_000
    expect_success(await run.call("runJob", {"duration_ms": 0}, deadline=future), "runJob")


async def check_unknown_version(run: CoreRun) -> None:
    expect_fail(await run.call("runJob", {"duration_ms": 0}, version=99), "a version 99 message",
                "validation")


async def check_unknown_action(run: CoreRun) -> None:
    expect_fail(await run.call("noSuchAction", {}), "action noSuchAction", "unknown_action")


async def check_poison(run: CoreRun) -> None:
    await run.drain_dlq()
    not_json = b"this is not JSON {" + run.token.encode()
    rid = str(uuid.uuid4())
    no_action = orjson.dumps({"request_id": rid, "params": {}})
    await run.publish_raw(not_json, message_id=str(uuid.uuid4()))
    await run.publish_raw(no_action, message_id=rid)
    wanted = {not_json: "a body that is not JSON", no_action: "a message without action"}
    deadline = time.monotonic() + run.options.timeout_s
    while wanted:
        for body in await run.drain_dlq():
            wanted.pop(body, None)
        if not wanted:
            break
        run.check_alive()
        if time.monotonic() > deadline:
            raise CheckFailed(f"not in {run.dlq} within {run.options.timeout_s:g} s: "
                              f"{', '.join(wanted.values())}")
        await asyncio.sleep(0.05)
    run.actions_of[rid] = "(no action)"
    record = await run.wait_final(rid)
    if record["status"] != "Fail":
        raise CheckFailed(f"the message without action has a {_show(record)} record, "
                          f"expected Fail")
    code = (record.get("error") or {}).get("code")
    if code not in KNOWN_CODES:
        raise CheckFailed(f"the Fail record of the message without action has code {code!r}, "
                          f"not one of contract §4")


async def check_keeps_running(run: CoreRun) -> None:
    # The instances of the poison check must still be the ones running (no crash, no restart).
    run.reap()
    if len(run.instances) < run.options.instances:
        raise CheckFailed(f"{run.options.instances - len(run.instances)} instances exited "
                          f"since the poison messages came")
    name, email = "After Poison", run.email("after-poison")
    result = expect_success(await run.call("createUser", {"name": name, "email": email}),
                            "createUser")
    expect_user(result, name=name, email=email)


async def check_redelivery(run: CoreRun) -> None:
    await run.drain_dlq()
    # A copy that comes after the final record: the user's email changed meanwhile, so a
    # second run would create a second user with the first email.
    first_email = run.email("redelivered")
    params = {"name": "Redelivered", "email": first_email}
    rid = await run.submit("createUser", params)
    first = await run.wait_final(rid)
    user = expect_success(first, "createUser")
    moved = run.email("redelivered-moved")
    expect_success(await run.call("updateUser", {"id": user["id"], "email": moved}),
                   "updateUser")
    await run.submit("createUser", params, rid=rid)
    # Two copies at once.
    twin_email = run.email("twins")
    twin = await run.submit("createUser", {"name": "Twins", "email": twin_email}, copies=2)
    twin_first = await run.wait_final(twin)
    expect_success(twin_first, "createUser (two copies at once)")
    await run.settle()
    again = await run.read(rid)
    if again != first:
        raise CheckFailed(f"the final record changed after a redelivery: {_show(first)} -> "
                          f"{_show(again) if again else 'gone'}")
    twin_again = await run.read(twin)
    if twin_again is None or twin_again["status"] != "Success":
        raise CheckFailed(f"with two copies at once the record ended "
                          f"{_show(twin_again) if twin_again else 'gone'}")
    emails = [u["email"] for u in await run.list_all()]
    if first_email in emails:
        raise CheckFailed("a copy delivered after the final record ran createUser again "
                          "(a second user with the first email exists)")
    if emails.count(twin_email) != 1:
        raise CheckFailed(f"two copies at once made {emails.count(twin_email)} users")
    dead = await run.drain_dlq()
    if dead:
        raise CheckFailed(f"{len(dead)} copies were dead-lettered; a copy of a request that is "
                          f"final must be acknowledged")


async def check_concurrency(run: CoreRun) -> None:
    count = 50
    emails = [run.email(f"many{i}") for i in range(count)]
    rids = [str(uuid.uuid4()) for _ in range(count)]
    now = now_ms()
    queued = ResultRecord(status=QUEUED, detail="queued", owner=SUB, queued_at=now,
                          updated_at=now)
    await asyncio.gather(*(run.results.create(rid, queued, ttl_s=RESULT_TTL_S) for rid in rids))

    async def publish(rid: str, email: str) -> None:
        message = RequestMessage("createUser", {"name": "Many", "email": email}, rid,
                                 principal=PRINCIPAL, queued_at=now)
        run.actions_of[rid] = "createUser"
        run.principals[rid] = SUB
        await run.broker.publish(run.queue, encode(message), message_id=rid)

    await asyncio.gather(*(publish(rid, email) for rid, email in zip(rids, emails, strict=True)))
    finals = await run.wait_finals(rids)
    ids: dict[str, int] = {}
    for email, record in zip(emails, finals, strict=True):
        result = expect_success(record, "createUser")
        expect_user(result, name="Many", email=email)
        ids[email] = result["id"]
    if len(set(ids.values())) != count:
        raise CheckFailed(f"{count} createUser requests gave {len(set(ids.values()))} "
                          f"distinct ids")
    listed = [u for u in await run.list_all() if u["email"] in ids]
    if len(listed) != count or any(ids[u["email"]] != u["id"] for u in listed):
        raise CheckFailed(f"listUsers shows {len(listed)} users for {count} requests, or ids "
                          f"other than the records give")


async def wait_started(run: CoreRun, rid: str, previous: Record | None) -> Record:
    """A Running record of `rid` with progress made, from a start later than `previous` (a
    new `started_at`, or progress that went back), if given."""
    deadline = time.monotonic() + run.options.timeout_s
    fresh = previous is None
    while True:
        record = await run.read(rid)
        if record is not None and record["status"] in FINAL_STATUSES:
            raise CheckFailed(f"the runJob ended {_show(record)} before it could be killed")
        if record is not None and record["status"] == "Running":
            if previous is not None and not fresh:
                fresh = _new_start(previous, record)
            if fresh and record.get("progress"):
                return record
        run.check_alive()
        if time.monotonic() > deadline:
            raise CheckFailed(f"{'no new start' if previous else 'no start'} of the runJob "
                              f"with progress within {run.options.timeout_s:g} s")
        await asyncio.sleep(0.02)


def _new_start(previous: Record, record: Record) -> bool:
    if previous.get("started_at") is not None and record.get("started_at") is not None:
        return bool(record["started_at"] != previous["started_at"])
    return bool((record.get("progress") or 0) < (previous.get("progress") or 0))


async def kill_holder(run: CoreRun, rid: str) -> str:
    """SIGKILL the instance that holds `rid` (or every instance, if none is found holding
    it), start one if none is left, and say what was done."""
    holder = await find_holder(run, rid)
    if holder is not None:
        await run.kill(holder)
        how = f"SIGKILL to the instance that held it (#{holder.number})"
    else:
        for instance in run.instances:
            await run.kill(instance)
        how = "SIGKILL to every instance (none was found holding it) and a fresh start"
    run.notes.append(f"kill: {how}")
    run.reap()
    if not run.instances:
        run.spawn()
    return how


async def check_kill(run: CoreRun) -> None:
    await run.ensure_instances()
    steps, duration = 6, 3000
    rid = await run.submit("runJob", {"duration_ms": duration, "steps": steps})
    await wait_started(run, rid, None)
    how = "after " + await kill_holder(run, rid)
    try:
        final = await run.wait_final(rid, run.options.timeout_s + CLAIM_TTL_S + duration / 1000)
    except CheckFailed as exc:
        raise CheckFailed(f"{how}: {exc}") from None
    result = expect_success(final, f"runJob {how}")
    if result != {"duration_ms": duration, "steps": steps}:
        raise CheckFailed(f"runJob gave {result}")


async def check_delivery_limit(run: CoreRun) -> None:
    """A request whose every start dies with its worker is given up after
    REFERENCE_DELIVERY_LIMIT starts: dead-lettered, with a Fail record."""
    await run.ensure_instances()
    await run.drain_dlq()
    rid = await run.submit("runJob", {"duration_ms": 3000, "steps": 6})
    previous: Record | None = None
    for start in range(1, DELIVERY_LIMIT + 1):
        try:
            previous = await wait_started(run, rid, previous)
        except CheckFailed as exc:
            raise CheckFailed(f"start {start} of {DELIVERY_LIMIT}: {exc}") from None
        await kill_holder(run, rid)
    try:
        final = await run.wait_final(rid, run.options.timeout_s + CLAIM_TTL_S)
    except CheckFailed as exc:
        raise CheckFailed(f"after {DELIVERY_LIMIT} starts killed: {exc}") from None
    if final["status"] != "Fail" or (final.get("error") or {}).get("code") not in KNOWN_CODES:
        raise CheckFailed(f"after {DELIVERY_LIMIT} starts killed (REFERENCE_DELIVERY_LIMIT="
                          f"{DELIVERY_LIMIT}) the runJob ended {_show(final)}, expected Fail")
    deadline = time.monotonic() + run.options.timeout_s
    while not any(rid.encode() in body for body in await run.drain_dlq()):
        if time.monotonic() > deadline:
            raise CheckFailed(f"the request given up after {DELIVERY_LIMIT} starts is not in "
                              f"{run.dlq} within {run.options.timeout_s:g} s")
        await asyncio.sleep(0.05)


async def find_holder(run: CoreRun, rid: str) -> Instance | None:
    """The instance whose process id appears in a key about `rid` (a claim), if exactly one."""
    keys = [k async for k in run.redis.scan_iter(match=f"{run.prefix}*{rid}*", count=1000)]
    numbers: set[int] = set()
    for key in keys:
        if key.decode() == run.prefix + rid:
            continue
        with contextlib.suppress(Exception):
            value = await run.redis.get(key)
            if isinstance(value, bytes):
                numbers.update(int(n) for n in re.findall(rb"\d+", value))
    holders = [i for i in run.instances if i.alive and i.pids() & numbers]
    return holders[0] if len(holders) == 1 else None


async def check_owner(run: CoreRun) -> None:
    wrong = [(rid, r.get("owner")) for rid, r in run.finals.items()
             if rid in run.principals and r.get("owner") != run.principals[rid]]
    if wrong:
        rid, owner = wrong[0]
        raise CheckFailed(f"{len(wrong)} of {len(run.finals)} final records do not keep the "
                          f"owner of the message's principal (e.g. {run.actions_of.get(rid)} "
                          f"{rid}: owner {owner!r}, expected {SUB!r}); GET /requests/{{id}} "
                          f"shows a record only to its owner")


TIMESTAMPS = ("queued_at", "started_at", "updated_at", "finished_at")


async def check_timestamps(run: CoreRun) -> None:
    """Timestamps a core writes are epoch milliseconds (the API's Server-Timing subtracts
    them), and a final record's come in order."""
    low, high = now_ms() - 24 * 3600 * 1000, now_ms() + 60_000
    for rid, record in run.finals.items():
        stamps = {name: record[name] for name in TIMESTAMPS if record.get(name) is not None}
        for name, value in stamps.items():
            if not low <= value <= high:
                raise CheckFailed(f"{run.actions_of.get(rid)} {rid}: {name} {value} is not a "
                                  f"time in epoch milliseconds near now")
        ordered = [stamps[n] for n in ("queued_at", "started_at", "finished_at") if n in stamps]
        if ordered != sorted(ordered):
            raise CheckFailed(f"{run.actions_of.get(rid)} {rid}: queued_at, started_at and "
                              f"finished_at out of order: {stamps}")


async def check_ttl(run: CoreRun) -> None:
    domain = run.prefix + run.options.domain_namespace
    keys = [k.decode() async for k in run.redis.scan_iter(match=run.prefix + "*", count=1000)]
    ours = set(run.actions_of) | set(run.finals)
    pipe = run.redis.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
    ttls = await pipe.execute()
    missing: list[str] = []
    exempt = 0
    for key, ttl in zip(keys, ttls, strict=True):
        if ttl != -1:
            continue
        names_request = any(m in ours for m in UUID.findall(key))
        if key.startswith(domain) and not names_request:
            exempt += 1
        else:
            missing.append(key)
    if not set(keys) & {run.prefix + rid for rid in run.finals}:
        raise CheckFailed(f"no record under the prefix {run.prefix!r}")
    if missing:
        raise CheckFailed(f"{len(missing)} of {len(keys)} keys under {run.prefix!r} have no "
                          f"TTL, e.g. {', '.join(sorted(missing)[:3])}")
    run.notes.append(f"ttl: {len(keys)} keys, {exempt} domain keys without TTL exempt")


async def check_key_layout(run: CoreRun) -> None:
    """Every key that names one of the run's requests is one that contract §5 names: the record,
    or `final:`, `claim:`, `starts:` with the record's key as hash tag (so that all the keys of
    one request share a Redis Cluster slot), or the domain's `req:` key."""
    p, domain = run.prefix, run.prefix + run.options.domain_namespace
    ours = set(run.actions_of) | set(run.finals)
    keys = [k.decode() async for k in run.redis.scan_iter(match=p + "*", count=1000)]
    wrong: list[str] = []
    for key in keys:
        for rid in set(UUID.findall(key)) & ours:
            named = {p + rid, f"{p}final:{{{p}{rid}}}", f"{p}claim:{{{p}{rid}}}",
                     f"{p}starts:{{{p}{rid}}}", f"{domain}req:{rid}"}
            if key not in named:
                wrong.append(key)
    if wrong:
        raise CheckFailed(f"{len(wrong)} keys about a request are not named as contract §5 says, "
                          f"e.g. {', '.join(sorted(wrong)[:2])} (expected e.g. "
                          f"{p}final:{{{p}<request_id>}})")
    markers = sum(1 for k in keys if k.startswith(p + "final:{"))
    run.notes.append(f"keys.layout: {len(keys)} keys, {markers} finality markers")


CHECKS: list[tuple[str, Check]] = [
    ("startup", check_startup),
    ("actions.createUser", check_create),
    ("actions.getUser", check_get),
    ("actions.listUsers", check_list),
    ("actions.updateUser", check_update),
    ("actions.deleteUser", check_delete),
    ("actions.runJob", check_run_job),
    ("errors.validation", check_validation),
    ("errors.not_found", check_not_found),
    ("errors.conflict", check_conflict),
    ("errors.job_failed", check_job_failed),
    ("roles.forbidden", check_roles),
    ("progress", check_progress),
    ("deadline", check_deadline),
    ("unknown.version", check_unknown_version),
    ("unknown.action", check_unknown_action),
    ("poison.dead_lettered", check_poison),
    ("poison.core_keeps_running", check_keeps_running),
    ("redelivery.no_second_run", check_redelivery),
    ("concurrency", check_concurrency),
    ("kill.another_instance_finishes", check_kill),
    ("kill.delivery_limit", check_delivery_limit),
    ("records.owner", check_owner),
    ("records.timestamps", check_timestamps),
    ("keys.layout", check_key_layout),
    ("ttl.every_key", check_ttl),
]
CHECK_NAMES = tuple(name for name, _ in CHECKS)


async def run_core(options: CoreOptions, out: TextIO = sys.stdout) -> int:
    report = Report("conformance.core", out)
    run = CoreRun(options)
    out.write(f"conformance core: {shlex.join(options.cmd)} ({options.instances} "
              f"instance{'s' if options.instances != 1 else ''}; "
              f"queue {run.queue}, key prefix {run.prefix}; logs kept in {run.logdir} "
              f"on failure)\n")
    out.flush()
    # A bound on a whole check, above the bounds of its own waits (which give the reasons).
    check_bound = 3 * options.timeout_s + CLAIM_TTL_S + 10
    try:
        try:
            await asyncio.wait_for(run.open(), options.timeout_s)
        except Exception as exc:
            reason = f"cannot set up on {options.amqp_url} / {options.redis_url}: " \
                     f"{type(exc).__name__}: {exc}"
            for name in CHECK_NAMES:
                report.fail(name, reason if name == "startup" else "not run: no broker/store")
            return _finish(report, run, out)
        for name, check in CHECKS:
            if name != "startup" and report.failed and report.failed[0].name == "startup":
                report.fail(name, "not run: the core did not start")
                continue

            async def guarded(check: Check = check, name: str = name) -> None:
                if name not in ("startup", "poison.core_keeps_running", "records.owner",
                                "records.timestamps", "keys.layout", "ttl.every_key"):
                    await run.ensure_instances()
                crashes = len(run.crashes)
                await check(run)
                run.reap()
                if len(run.crashes) > crashes:
                    raise CheckFailed(run.crashes[crashes])

            await report.run(name, guarded, timeout_s=check_bound)
    finally:
        await run.close()
    return _finish(report, run, out)


def _finish(report: Report, run: CoreRun, out: TextIO) -> int:
    details = ""
    if report.failed:
        lines = [f"core output (last {LOG_TAIL_LINES} lines of each instance; full logs in "
                 f"{run.logdir}):"]
        for log in sorted(run.logdir.glob("core-*.log"), key=lambda p: int(p.stem[5:])):
            lines.append(f"  --- {log.name}")
            text = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            lines.extend(f"  {line}" for line in text)
        details = "\n".join(lines)
        out.write(details + "\n")
        for result in report.failed:
            result.details = f"{result.reason}\n\n{details}"
    else:
        shutil.rmtree(run.logdir, ignore_errors=True)
    if run.options.junit_xml:
        report.notes = [f"command: {shlex.join(run.options.cmd)}", f"queue: {run.queue}",
                        f"key prefix: {run.prefix}", *run.notes]
        report.write_junit(run.options.junit_xml)
    out.write(report.summary() + "\n")
    out.flush()
    return 1 if report.failed else 0

