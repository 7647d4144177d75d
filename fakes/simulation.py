"""A seeded simulation of the whole pipeline under faults (`reference simulate`).

One seed builds, in one event loop on virtual time (looptime), several APIs (each a Sanic app
driven through ASGI, no sockets) and several core workers on the in-memory broker and one
fake Redis server. It runs a random workload (the journeys of `scenarios/`, plus raw messages
from a foreign producer, malformed ones included) under a random schedule of faults (broker
and store faults from `fakes.faults`, clock jumps, workers killed or restarted), then switches
the faults off, lets the system settle, and checks invariants (see `check_invariants`).

Everything random is drawn from the seed before the run starts (`draw_plan`), so that a seed
always replays the same workload and the same fault schedule. The interleaving of tasks can
still differ between two runs of one seed where the code iterates over sets keyed by random
request ids (Python's hash seed) or reads real time (JWT expiry); run with
`PYTHONHASHSEED=0` for the closest replay. Virtual time makes TTLs, claims, deadlines and
long jobs cost no real time: a seed spans minutes of simulated time in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import httpx

from reference.auth import sign_token
from reference.bootstrap import MemoryBackends, Services, build
from reference.clock import use_clock
from reference.errors import PoisonMessage
from reference.fakes.faults import Faults
from reference.fakes.memory_broker import InMemoryBroker, MemoryBrokerClient
from reference.fakes.redis_server import client_faults, fake_redis_client
from reference.messages import decode
from reference.records import ResultRecord
from reference.scenarios.journeys import SCENARIOS
from reference.scenarios.steps import Call, Context, Reply, ScenarioFailure, run_async
from reference.settings import Settings
from reference.worker import CoreWorker

log = logging.getLogger(__name__)

SIM_EPOCH_S = 1_800_000_000.0  # the wall clock at virtual time 0
REAL_TIME_LIMIT_S = 120.0  # a seed takes 0.3 to 1.5 s; one that takes this long spins
SECRET = "simulation-secret-of-at-least-32-bytes!"
ACTION_ROUTES = {("POST", "/users"), ("GET", "/users"), ("GET", "/users/{id}"),
                 ("PUT", "/users/{id}"), ("DELETE", "/users/{id}"), ("POST", "/jobs")}
DOCUMENTED = frozenset({200, 201, 202, 204, 400, 401, 404, 409, 413, 422, 503, 504})
DOMAIN_PREFIX = "{reference:users}:"  # adapters/redis_keys.USERS_NAMESPACE
BROKER_FAULTS = ("connection_loss", "channel_closed", "nack", "confirm_lost", "slow_confirm",
                 "blackhole", "reply_lost")
STORE_FAULTS = ("refused", "reset_peer", "closed_transport", "timeout", "readonly", "oom",
                "latency", "blackhole")


# --- the plan: everything a seed decides, drawn before the run ---------------------------------


@dataclass(frozen=True)
class FaultEvent:
    at_s: float
    target: str  # "broker", "store", "clock", "kill", "restart"
    name: str = ""
    window_s: float | None = None  # on for a window...
    nth: int | None = None  # ...or on the n-th call
    value: float = 0.0  # clock jump, or downtime of a killed worker


@dataclass(frozen=True)
class Plan:
    seed: int
    settings: Settings
    apis: int
    workers: int
    journeys: tuple[tuple[float, str, int, int], ...]  # (start, scenario, api, job_ms)
    foreign: tuple[tuple[float, str], ...]  # (send at, kind)
    faults: tuple[FaultEvent, ...]
    faults_end_s: float


FOREIGN_KINDS = ("create", "job", "not_json", "no_params", "unicode_cursor", "unknown_action",
                 "version_2", "past_deadline", "huge_id", "duplicate", "no_request_id")


def draw_plan(seed: int, *, faulty: bool = True) -> Plan:
    rng = random.Random(seed)
    settings = Settings(
        jwt_secret=SECRET,
        queue=f"sim-{seed}",
        queue_type=rng.choice(("classic", "classic", "quorum")),
        delivery_limit=rng.choice((2, 3, 5)),
        completion=rng.choice(("poll", "batch", "push", "reply")),
        request_timeout_s=rng.choice((2.0, 5.0, 10.0)),
        claim_ttl_s=rng.choice((0.5, 2.0, 10.0)),
        running_ttl_s=120.0,
        result_ttl_s=3600.0,
        poll_interval_ms=rng.choice((20.0, 100.0)),  # CPU-bound under virtual time
        safety_poll_ms=500.0,
        concurrency=rng.choice((1, 2, 8)),
        shutdown_timeout_s=2.0,
        connect_timeout_s=5.0,
    )
    horizon = 60.0
    journeys = tuple(sorted(
        (round(rng.uniform(0, horizon), 3), rng.choice(sorted(SCENARIOS)), rng.randrange(3),
         rng.choice((0, 200, 3000, 20000)))
        for _ in range(rng.randint(4, 12))))
    foreign = tuple(sorted((round(rng.uniform(0, horizon), 3), rng.choice(FOREIGN_KINDS))
                           for _ in range(rng.randint(0, 6))))
    events: list[FaultEvent] = []
    if faulty:
        for _ in range(rng.randint(1, 8)):
            at = round(rng.uniform(0, horizon), 3)
            kind = rng.choice(("broker", "broker", "store", "store", "store", "clock", "kill",
                               "restart"))
            window = round(rng.choice((0.5, 2.0, 8.0, 20.0)), 3)
            if kind in ("broker", "store"):
                name = rng.choice(BROKER_FAULTS if kind == "broker" else STORE_FAULTS)
                if rng.random() < 0.5:
                    events.append(FaultEvent(at, kind, name, window_s=window))
                else:
                    events.append(FaultEvent(at, kind, name, nth=rng.randint(1, 30)))
            elif kind == "clock":
                events.append(FaultEvent(at, "clock", value=rng.choice((-30.0, 5.0, 600.0))))
            else:
                events.append(FaultEvent(at, kind, value=rng.choice((0.0, 1.0, 15.0))))
    return Plan(seed, settings, apis=rng.randint(1, 3), workers=rng.randint(1, 3),
                journeys=journeys, foreign=foreign, faults=tuple(sorted(events, key=_at)),
                faults_end_s=horizon + 25.0)


def _at(event: FaultEvent) -> float:
    return event.at_s


# --- the result -------------------------------------------------------------------------------


@dataclass
class SeedResult:
    seed: int
    violations: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    def violate(self, invariant: str, detail: str) -> None:
        self.violations.append(f"{invariant}: {detail}"[:500])


@dataclass
class HttpRecord:
    api: int
    method: str
    route: str
    path: str
    status: int
    headers: dict[str, str]
    body: Any


# --- the running system -------------------------------------------------------------------------


class _Api:
    def __init__(self, index: int, services: Services, app: Any) -> None:
        self.index = index
        self.services = services
        self.app = app
        self.lifespan: asyncio.Task[None] | None = None
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url=f"http://api{index}.sim")

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
        self.lifespan = asyncio.get_running_loop().create_task(
            self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        reply = await asyncio.wait_for(self.outbox.get(), 30)
        if reply["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"API {self.index} did not start: {reply}")

    async def stop(self) -> None:
        await self.client.aclose()
        if self.lifespan is not None and not self.lifespan.done():
            await self.inbox.put({"type": "lifespan.shutdown"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.outbox.get(), 30)
            self.lifespan.cancel()
            await asyncio.wait({self.lifespan}, timeout=5)


class _Slot:
    """One worker process of the simulation: killed and restarted as the plan says."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.generation = 0
        self.worker: CoreWorker | None = None
        self.services: Services | None = None
        self.dead: list[CoreWorker] = []


class Simulation:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.settings = plan.settings
        self.result = SeedResult(plan.seed)
        self.faults = Faults()
        self.memory = MemoryBackends(faults=self.faults)
        self.apis: list[_Api] = []
        self.slots = [_Slot(i) for i in range(plan.workers)]
        self.http: list[HttpRecord] = []
        self.notices: Counter[str] = Counter()
        self.foreign_sent: dict[str, str] = {}  # request id -> kind (confirmed publishes)
        self.foreign_unsure: dict[str, str] = {}  # publish raised: maybe queued, maybe not
        self.observer: Any = None
        self._unique = itertools.count(1)
        self._tasks: list[asyncio.Task[Any]] = []
        self._producer: MemoryBrokerClient | None = None

    # --- building and tearing down ---------------------------------------------------------

    async def start(self) -> None:
        from sanic import Sanic

        from reference.api import create_app

        Sanic.test_mode = True  # no signal handlers, no MOTD
        for i in range(self.plan.apis):
            svc = build(self.settings, memory=self.memory)
            await svc.start()
            app = create_app(self.settings, services=svc,
                             name=f"sim_{self.plan.seed}_{i}_{next(_app_ids)}")
            app.config.MOTD = False
            api = _Api(i, svc, app)
            await api.start()
            self.apis.append(api)
        for slot in self.slots:
            await self._start_worker(slot)
        server: fakeredis.FakeServer = self.memory.redis
        self.observer = fake_redis_client(server, max_connections=4, socket_timeout_s=5.0,
                                          pool_timeout_s=5.0)
        broker: InMemoryBroker = self.memory.broker
        self._producer = broker.client()
        await self._producer.connect()

    async def _start_worker(self, slot: _Slot) -> None:
        svc = build(self.settings, memory=self.memory, require_key=False)
        await svc.start()
        slot.generation += 1
        worker = svc.worker(worker_id=f"sim-w{slot.index}.{slot.generation}")
        await worker.start()
        slot.worker, slot.services = worker, svc

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for api in self.apis:
            await api.stop()
            await api.services.close()
        for slot in self.slots:
            if slot.worker is not None:
                await slot.worker.stop()
            if slot.services is not None:
                await slot.services.close()
        if self._producer is not None:
            await self._producer.close()
        if self.observer is not None:
            await self.observer.aclose(close_connection_pool=True)
        from sanic import Sanic

        for api in self.apis:
            Sanic._app_registry.pop(api.app.name, None)

    # --- the workload ---------------------------------------------------------------------

    def _context(self) -> Context:
        keys = self.apis[0].services.keys
        assert keys is not None

        def token(sub: str) -> str:
            return sign_token(keys, sub=sub, ttl_s=24 * 3600, roles=("users:write",))

        return Context(token=token, unique=lambda: f"u{next(self._unique)}",
                       request_timeout_s=self.settings.request_timeout_s, sub="sim")

    async def _send(self, api: _Api, call: Call) -> Reply:
        try:
            async with asyncio.timeout(self.settings.request_timeout_s + 60):
                response = await api.client.request(call.method, call.path, json=call.json,
                                                     content=call.content,
                                                     headers=dict(call.headers))
        except TimeoutError:
            self.result.violate("bounded", f"{call.method} {call.path} got no answer")
            raise
        try:
            body: Any = response.json() if response.content else None
        except ValueError:
            body = response.text
        headers = {k.lower(): v for k, v in response.headers.items()}
        self.http.append(HttpRecord(api.index, call.method, _route(call.method, call.path),
                                    call.path, response.status_code, headers, body))
        self.result.stats[f"http {response.status_code}"] += 1
        return Reply(response.status_code, headers, body)

    async def _journey(self, start_s: float, name: str, api_index: int, job_ms: int) -> None:
        await asyncio.sleep(start_s)
        api = self.apis[api_index % len(self.apis)]
        ctx = self._context()
        ctx.job_ms = job_ms
        replies: list[Reply] = []

        async def send(call: Call) -> Reply:
            reply = await self._send(api, call)
            replies.append(reply)
            return reply

        try:
            await run_async(SCENARIOS[name](ctx), send)
            self.result.stats["journeys ok"] += 1
        except ScenarioFailure as exc:
            # Under faults a journey may meet a 503, a 504 or a re-run's answer; without a
            # fault before it, its failure is a finding.
            now = asyncio.get_running_loop().time()
            if any(e.at_s <= now for e in self.plan.faults):
                self.result.stats["journeys cut short by faults"] += 1
            elif replies and replies[-1].status == 504:
                # A backlog (long jobs on few workers) outlasted the request timeout: the contract's
                # answer to that; the request itself must still resolve (checked later).
                self.result.stats["journeys past the request timeout"] += 1
            elif "not final after" in str(exc):
                # A polling journey's patience is counted in reads, made for real time; the
                # request itself is checked after settling, like every other.
                self.result.stats["journeys out of patience"] += 1
            else:
                self.result.violate("journey", f"{name} failed with no fault before it: {exc}")

    def _foreign_body(self, kind: str, rid: str) -> bytes:
        message: dict[str, Any] = {"action": "createUser", "request_id": rid,
                                   "params": {"name": "Foreign", "email": f"{rid}@f.example"}}
        if kind == "job":
            message.update(action="runJob", params={"duration_ms": 1000, "steps": 4})
        elif kind == "not_json":
            return b"\xff\xfe{not json"
        elif kind == "no_params":
            message.pop("params")
        elif kind == "unicode_cursor":
            message.update(action="listUsers", params={"cursor": "\u00b2"})
        elif kind == "unknown_action":
            message["action"] = "launchRocket"
        elif kind == "version_2":
            message["version"] = 2
        elif kind == "past_deadline":
            message["deadline"] = 1
        elif kind == "huge_id":
            message.update(action="getUser", params={"id": 10**30})
        elif kind == "no_request_id":
            message.pop("request_id")
        return json.dumps(message).encode()  # not orjson: it refuses integers past 64 bits

    async def _foreign(self, at_s: float, kind: str) -> None:
        """A producer other than the API: it publishes straight to the queue, and retries a
        publish that was not confirmed (so a message may arrive twice)."""
        await asyncio.sleep(at_s)
        rid = f"foreign-{self.plan.seed}-{next(self._unique)}"
        body = self._foreign_body(kind, rid)
        copies = 2 if kind == "duplicate" else 1
        assert self._producer is not None
        for _ in range(copies):
            for attempt in range(5):
                try:
                    await self._producer.publish(self.settings.queue, body, message_id=rid)
                    self.foreign_sent[rid] = kind
                    break
                except Exception:
                    self.foreign_unsure.setdefault(rid, kind)
                    await asyncio.sleep(1.0 + attempt)
        self.result.stats["foreign messages"] += 1

    async def _notices(self) -> None:
        """Count the final-record notices per request id: one per final write."""
        pubsub = self.observer.pubsub()
        await pubsub.subscribe(self._finals_channel())
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    self.notices[message["data"].decode()] += 1
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _finals_channel(self) -> str:
        return f"{self.settings.key_prefix}reference:finals"

    # --- the faults -----------------------------------------------------------------------

    async def _fault(self, event: FaultEvent) -> None:
        await asyncio.sleep(event.at_s)
        self.result.stats[f"fault {event.target} {event.name}".strip()] += 1
        if event.target in ("broker", "store"):
            group = self.faults.broker if event.target == "broker" else self.faults.store
            fault = getattr(group, event.name)
            if event.window_s is not None:
                fault.on(for_s=event.window_s)
            else:
                fault.on_call(event.nth or 1)
        elif event.target == "clock":
            self.faults.clock.jump(event.value)
        elif event.target == "kill":
            await self._kill(self.slots[int(event.at_s * 1000) % len(self.slots)], event.value)
        elif event.target == "restart":
            slot = self.slots[int(event.at_s * 1000) % len(self.slots)]
            if slot.worker is not None and slot.services is not None:
                await slot.worker.stop()
                await slot.services.close()
                slot.worker = slot.services = None
                await self._start_worker_when_possible(slot)

    async def _kill(self, slot: _Slot, downtime_s: float) -> None:
        """The worker's process dies: its connections close, its tasks stop mid-step."""
        worker, svc = slot.worker, slot.services
        if worker is None or svc is None:
            return
        slot.worker = slot.services = None
        broker: Any = svc.broker
        broker.sever()
        results: Any = svc.results
        client_faults(results.client).reset_peer.on()
        await worker.abort()
        slot.dead.append(worker)
        await asyncio.sleep(downtime_s)
        await self._start_worker_when_possible(slot)

    async def _start_worker_when_possible(self, slot: _Slot) -> None:
        for _ in range(60):
            try:
                await self._start_worker(slot)
                return
            except Exception as exc:  # the broker or store may be down right now
                log.debug("worker %d could not start yet: %s", slot.index, exc)
                await asyncio.sleep(1.0)
        self.result.violate("recovery", f"worker {slot.index} could not start for 60 s")

    # --- the run --------------------------------------------------------------------------

    async def run(self) -> SeedResult:
        loop = asyncio.get_running_loop()
        await self.start()
        try:
            self._tasks.append(loop.create_task(self._notices()))
            work = [loop.create_task(self._journey(*j)) for j in self.plan.journeys]
            work += [loop.create_task(self._foreign(*f)) for f in self.plan.foreign]
            faults = [loop.create_task(self._fault(e)) for e in self.plan.faults]
            await asyncio.sleep(self.plan.faults_end_s)
            self.faults.off()
            if faults:
                await asyncio.wait(faults, timeout=120)
            done, pending = await asyncio.wait(work, timeout=600) if work else (set(), set())
            for task in pending:
                self.result.violate("bounded", f"a journey still runs after 600 s: {task}")
                task.cancel()
            for task in done:
                if task.exception() is not None:
                    self.result.violate("journey", repr(task.exception()))
            await self._settle()
            await self.check_invariants()
        finally:
            await self.stop()
        return self.result

    def _deaths_possible(self) -> bool:
        """Whether the plan can end a claim without its release: a worker killed, or a store
        outage long enough for a claim to lapse while its worker lives. Only then may a
        request be given up at the delivery limit."""
        claim_ttl = self.settings.claim_ttl_s
        return any(e.target == "kill" or (e.target == "store" and (e.window_s or 0) >= claim_ttl)
                   for e in self.plan.faults)

    def _live_workers(self) -> list[CoreWorker]:
        return [s.worker for s in self.slots if s.worker is not None]

    async def _settle(self) -> None:
        """Wait (bounded) until every message is handled: nothing ready, nothing unsettled."""
        broker: InMemoryBroker = self.memory.broker
        queue = broker.queues[self.settings.queue]
        for slot in self.slots:
            if slot.worker is None:
                await self._start_worker_when_possible(slot)
        bound = 10 * self.settings.claim_ttl_s + self.settings.request_timeout_s + 300
        end = asyncio.get_running_loop().time() + bound
        quiet = 0
        while quiet < 3:
            busy = (queue.ready or broker.unsettled()
                    or any(w.in_flight for w in self._live_workers()))
            quiet = 0 if busy else quiet + 1
            if asyncio.get_running_loop().time() > end:
                self.result.violate("settles", f"not settled after {bound:g} s: ready="
                                    f"{len(queue.ready)} unsettled={broker.unsettled()} "
                                    f"in_flight={[w.in_flight for w in self._live_workers()]}")
                return
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # the last notices reach the observer

    # --- the invariants -------------------------------------------------------------------

    async def _records(self) -> dict[str, tuple[ResultRecord | None, int]]:
        """Every key in the fake Redis with its parsed record (None if it is not one) and
        PTTL."""
        out: dict[str, tuple[ResultRecord | None, int]] = {}
        async for raw in self.observer.scan_iter(count=500):
            key = raw.decode()
            ttl = await self.observer.pttl(key)
            record = None
            if await self.observer.type(key) == b"string":
                value = await self.observer.get(key)
                with contextlib.suppress(Exception):
                    record = ResultRecord.from_json(value)
            out[key] = (record, ttl)
        return out

    async def check_invariants(self) -> None:
        r = self.result
        keys = await self._records()
        prefix = self.settings.key_prefix

        def record_of(rid: str) -> ResultRecord | None:
            return keys.get(prefix + rid, (None, 0))[0]

        # Keys: every key has a TTL, but the example domain's own data.
        for key, (_, ttl) in keys.items():
            domain = key.startswith(prefix + DOMAIN_PREFIX)
            if ttl == -1 and not (domain and ":req:" not in key):  # -2: it just expired
                r.violate("ttl", f"key {key!r} has no TTL")

        # HTTP answers: documented statuses, the envelope, and agreement with the records.
        for h in self.http:
            where = f"{h.method} {h.path} -> {h.status} (api {h.api})"
            given_up = (h.status == 500 and self._deaths_possible()
                        and isinstance(h.body, dict)
                        and str(h.body.get("detail", "")).startswith("given up"))
            if h.status not in DOCUMENTED and not given_up:
                r.violate("http status", f"{where}: undocumented status; body {h.body!r}")
                continue
            if h.status == 504:
                if not (isinstance(h.body, dict) and {"request_id", "status", "detail"}
                        <= h.body.keys() and h.headers.get("location")):
                    r.violate("http envelope", f"{where}: 504 without its body or Location")
            elif h.status >= 400:
                error = h.body.get("error") if isinstance(h.body, dict) else None
                if not (isinstance(error, dict) and isinstance(error.get("code"), str)
                        and isinstance(error.get("message"), str)):
                    r.violate("http envelope", f"{where}: no error envelope: {h.body!r}")
            rid = h.headers.get("x-request-id", "")
            if (h.method, h.route) not in ACTION_ROUTES or h.status not in (
                    200, 201, 202, 204, 504) or (h.status == 504 and not rid):
                continue
            record = record_of(rid)
            if record is None or not record.is_final:
                r.violate("final record", f"{where}: request {rid} has "
                          f"{'no record' if record is None else record.status} after settling")
                continue
            if h.status in (200, 201, 202, 204) and self.notices[rid] != 1:
                r.violate("one final record", f"{where}: {self.notices[rid]} final writes "
                          f"for {rid}")
            if h.status in (200, 201, 204):
                if record.status != "Success":
                    r.violate("agreement", f"{where}: the record says {record.status}")
                elif h.status != 204 and h.body != record.result:
                    r.violate("agreement", f"{where}: client saw {h.body!r}, record has "
                              f"{record.result!r}")

        # Users: one per createUser request id.
        ids = keys.get(prefix + DOMAIN_PREFIX + "next_id")
        created = [k for k in keys if k.startswith(prefix + DOMAIN_PREFIX + "req:")]
        made = int(await self.observer.get(prefix + DOMAIN_PREFIX + "next_id") or 0) \
            if ids else 0
        if made != len(created):
            r.violate("one user per request", f"{made} users made for {len(created)} "
                      f"createUser request ids")
        for h in self.http:
            if (h.method, h.route, h.status) == ("POST", "/users", 201):
                rid = h.headers.get("x-request-id", "")
                stored = await self.observer.get(f"{prefix}{DOMAIN_PREFIX}req:{rid}")
                if not isinstance(h.body, dict) or stored is None \
                        or int(stored) != h.body.get("id"):
                    r.violate("one user per request", f"request {rid} answered user "
                              f"{h.body!r}, the repository recorded {stored!r}")

        # Foreign messages: each handled once, as its kind says.
        for rid, kind in self.foreign_sent.items():
            record = record_of(rid)
            if kind in ("not_json", "no_request_id"):
                continue
            if record is None or not record.is_final:
                r.violate("foreign", f"{kind} message {rid}: "
                          f"{'no record' if record is None else record.status}")
                continue
            if self.notices[rid] != 1:
                r.violate("one final record", f"foreign {kind} {rid}: {self.notices[rid]} "
                          f"final writes")
            expected = {"create": "Success", "job": "Success", "duplicate": "Success"}
            code = record.error_code
            if kind in expected and record.status != "Success" and not (
                    _given_up(record) and self._deaths_possible()):
                r.violate("foreign", f"{kind} {rid} ended {record.status} {record.error}")
            elif kind not in expected and code not in ("validation", "unknown_action",
                                                       "deadline_exceeded"):
                r.violate("foreign", f"{kind} {rid} ended {record.status} code {code}")

        # Deliveries, workers and claims after settling.
        broker: InMemoryBroker = self.memory.broker
        if broker.unsettled():
            r.violate("settled", f"{broker.unsettled()} deliveries left unsettled")
        for worker in self._live_workers():
            if worker.in_flight:
                r.violate("in flight", f"worker {worker.worker_id} still has "
                          f"{worker.in_flight} in flight")
            if worker.claims_held:
                r.violate("claims", f"worker {worker.worker_id} still holds "
                          f"{sorted(worker.claims_held)}")
            renewer = worker._renewer
            if renewer is None or renewer.done():
                r.violate("loops alive", f"the claim renewer of {worker.worker_id} ended")
        live_ids = {w.worker_id for w in self._live_workers()}
        for key in keys:
            if key.startswith(prefix + "claim:{"):
                holder = await self.observer.get(key)
                holder = holder.decode() if holder else None
                if holder not in live_ids:
                    r.violate("claims", f"{key} held by {holder}, not a live worker")
        dead_letter_ids = set()
        for dead in broker.dead_letters(self.settings.queue):
            why = _dead_letter_reason(dead.body, dead.reason, record_of,
                                      self._deaths_possible())
            self.result.stats[f"dead-lettered {why}"] += 1
            if why is None:
                r.violate("dead letters", f"{dead.message_id}: dead-lettered ({dead.reason}) "
                          f"for no documented reason; record "
                          f"{record_of(dead.message_id or '')}")
            if dead.message_id:
                dead_letter_ids.add(dead.message_id)
        for key, (record, _) in keys.items():
            if record is not None and record.status == "Running" \
                    and key.removeprefix(prefix) not in dead_letter_ids:
                r.violate("running", f"{key} stays Running after settling")

        # Liveness: with the faults gone, every API serves a whole journey.
        for api in self.apis:
            try:
                await run_async(SCENARIOS["lifecycle"](self._context()),
                                functools.partial(self._send, api))
            except (ScenarioFailure, TimeoutError) as exc:
                r.violate("recovery", f"API {api.index} after the faults: {exc}"[:300])


def _given_up(record: ResultRecord) -> bool:
    return record.error_code == "internal" and record.detail.startswith("given up")


def _dead_letter_reason(body: bytes, reason: str, record_of: Any,
                        deaths_possible: bool) -> str | None:
    """The documented reason a dead letter has (docs/contract.md §2), or None."""
    if reason == "delivery_limit":
        return "delivery_limit (broker)"
    try:
        rid = decode(body).request_id
    except PoisonMessage:
        return "poison"
    record = record_of(rid)
    if record is not None and _given_up(record) and deaths_possible:
        return "delivery_limit (worker)"
    return None


def _route(method: str, path: str) -> str:
    path = path.split("?", 1)[0]
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "users":
        return "/users/{id}"
    if len(parts) >= 2 and parts[0] == "requests":
        return "/requests/{id}"
    return path


_app_ids = itertools.count(1)


# --- running seeds -----------------------------------------------------------------------------


class _VirtualTime:
    """fakeredis reads `time.time()` for key expiry; in a simulation it reads virtual time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def time(self) -> float:
        return SIM_EPOCH_S + self._loop.time()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def _virtual_time(loop: asyncio.AbstractEventLoop, faults: Faults) -> Iterator[None]:
    from fakeredis._socket import _base as fakeredis_socket

    original = fakeredis_socket.time  # type: ignore[attr-defined]
    fakeredis_socket.time = _VirtualTime(loop)  # type: ignore[attr-defined,assignment]
    try:
        with use_clock(lambda: SIM_EPOCH_S + loop.time() + faults.clock.offset_s):
            yield
    finally:
        fakeredis_socket.time = original  # type: ignore[attr-defined]


@contextlib.contextmanager
def _quiet(verbose: bool) -> Iterator[None]:
    if verbose:
        yield
        return
    # Not per logger: Sanic configures its loggers afresh with every app it makes.
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def run_seed(seed: int, *, verbose: bool = False, faulty: bool = True) -> SeedResult:
    """Run one seed in a loop of its own on virtual time; never raises for a violation."""
    return run_plan(draw_plan(seed, faulty=faulty), verbose=verbose)


def run_plan(plan: Plan, *, verbose: bool = False) -> SeedResult:
    """Run one plan (a seed's, or one written by hand) on virtual time."""
    import looptime

    seed = plan.seed
    loop = looptime.new_event_loop(start=0.0, noop_cycles=2)
    random.seed(seed)  # the journeys draw from the module's generator
    sim = Simulation(plan)
    main = loop.create_task(_bounded(sim))
    # Virtual time only moves when the loop is idle: a task that spins would hold a seed for
    # ever. A watchdog on real time ends such a seed as a violation.
    stop_watching = threading.Event()
    fired: list[bool] = []

    def watch() -> None:
        if stop_watching.wait(REAL_TIME_LIMIT_S):
            return
        fired.append(True)
        while not main.done() and not stop_watching.is_set():
            # Again and again: a library may swallow one cancellation.
            loop.call_soon_threadsafe(main.cancel)
            stop_watching.wait(0.2)

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        with _quiet(verbose), _virtual_time(loop, sim.faults):
            result = loop.run_until_complete(main)
        if fired:
            raise asyncio.CancelledError
        return result
    except asyncio.CancelledError:
        result = SeedResult(seed)
        result.violate("bounded", f"the seed did not end within {REAL_TIME_LIMIT_S:g} s of "
                       f"real time: a task spins without letting virtual time pass")
        return result
    except Exception as exc:
        result = SeedResult(seed)
        result.violate("crash", f"the simulation itself failed: {type(exc).__name__}: {exc}")
        return result
    finally:
        stop_watching.set()
        with contextlib.suppress(Exception):
            _cancel_all(loop)
        loop.close()


async def _bounded(sim: Simulation) -> SeedResult:
    async with asyncio.timeout(3600):  # virtual seconds: a seed that hangs is a violation
        try:
            return await sim.run()
        except TimeoutError:
            sim.result.violate("bounded", "the seed did not end within 3600 virtual s")
            return sim.result


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=5))


def replay_command(seed: int) -> str:
    return f"PYTHONHASHSEED=0 reference simulate --seed {seed}"
