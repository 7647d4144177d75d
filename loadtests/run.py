"""`python -m reference.loadtests.run`: start a stack, put load on it, report (SPEC §6).

Starts `reference serve --workers N` and M `reference worker` processes (or the hand-written
baseline with --baseline) on real RabbitMQ and Redis, with a queue and key prefix of its own,
puts load on it for a fixed time with locust (the journeys of scenarios/) or wrk (a Lua script:
`POST /jobs` or the users CRUD; a C load generator costs the machine far less than locust),
stops what it started, and writes into --out: summary.json, plot.png (the run over time),
timeline.json (the same per second), memory.csv (API memory and CPU per component, per
second), the driver's own output and the processes' logs.

With --with-baseline (the default with wrk) the baseline is measured too, after the product,
with the same load: its files go to <out>/baseline/, its figures under `baseline` in
summary.json, and plot.png shows both. `--host URL` puts the load on a stack that is already
running instead.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import csv
import itertools
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
READ_COMMANDS = ("get", "mget")
DRIVERS = ("locust", "wrk")
WRK_SCENARIOS = ("jobs", "users")
PARTS = ("total", "queue", "work", "notice")
COMPONENTS = ("api", "workers", "rabbitmq", "redis", "driver")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reference.loadtests.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--driver", choices=DRIVERS, default="locust",
                   help="locust (the journeys of scenarios/) or wrk (jobs or users CRUD)")
    p.add_argument("--users", "-c", "--connections", dest="users", type=int, default=64,
                   help="locust users, or wrk connections (default 64)")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--spawn-rate", type=float, default=64)
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of load (default 20 with locust, 10 with wrk; wrk: whole s)")
    p.add_argument("--warmup", type=float, default=None,
                   help="wrk: seconds of unmeasured load first (default 2)")
    p.add_argument("--api-workers", type=int, default=1)
    p.add_argument("--core-workers", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=64, help="per core worker")
    from reference.settings import COMPLETIONS  # only the standard library at the top

    p.add_argument("--completion", default="poll", choices=COMPLETIONS)
    p.add_argument("--poll-interval-ms", type=float, default=5.0)
    p.add_argument("--scenario", default=None,
                   help="locust: a journey of scenarios/ (default lifecycle); "
                        "wrk: jobs or users (default jobs)")
    p.add_argument("--request-timeout-s", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=Path("loadtest-out"))
    p.add_argument("--host", help="put the load on this already running stack")
    p.add_argument("--baseline", action="store_true",
                   help="measure the hand-written baseline pipeline instead of the product")
    p.add_argument("--with-baseline", action=argparse.BooleanOptionalAction, default=None,
                   help="measure the baseline too, after the product, with the same load "
                        "(default: on with wrk, off with locust)")
    p.add_argument("--port", type=int, default=0, help="API port (0: a free one)")
    p.add_argument("--replot", action="store_true",
                   help="only redraw --out's plot.png from the files of a finished run")
    args = p.parse_args(argv)
    if args.replot:
        return args
    wrk = args.driver == "wrk"
    if args.duration is None:
        args.duration = 10.0 if wrk else 20.0
    if args.warmup is None:
        args.warmup = 2.0 if wrk else 0.0
    if args.scenario is None:
        args.scenario = "jobs" if wrk else "lifecycle"
    if args.with_baseline is None:
        args.with_baseline = wrk
    if wrk:
        if args.scenario not in WRK_SCENARIOS:
            p.error(f"--scenario with wrk: one of {', '.join(WRK_SCENARIOS)}")
        if args.users < args.threads:
            p.error("wrk needs at least as many connections as threads")
        args.duration = float(max(1, round(args.duration)))  # wrk takes whole seconds
        if shutil.which("wrk") is None:
            p.error("wrk is not installed (Debian: apt-get install -y wrk)")
    else:
        from reference.scenarios import SCENARIOS

        if args.scenario not in SCENARIOS:
            p.error(f"--scenario with locust: one of {', '.join(sorted(SCENARIOS))}")
    if args.users < 1:
        p.error("--users must be at least 1")
    return args


def _real_url(var: str, default: str) -> str:
    url = os.environ.get(var, "")
    return url if url and not url.startswith("memory:") else default


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- Redis command statistics -----------------------------------------------------------


def _commandstats(redis_url: str) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


# --- processes: memory and CPU from /proc (read only) ---------------------------------------

_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command name) for every process."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        table[int(entry.name)] = (int(raw.rsplit(")", 1)[1].split()[1]), name)
    return table


def _tree(table: dict[int, tuple[int, str]], root: int) -> list[int]:
    """A process and all its descendants (Sanic serves from child processes)."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        current = todo.pop()
        if current in table:
            found.append(current)
        todo += children.get(current, [])
    return found


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads) so far; 0 once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = raw.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_ticks() -> tuple[int, int]:
    """CPU ticks the whole machine spent so far, all CPUs (/proc/stat): in processes (user,
    nice, system) and in interrupts (irq, softirq: loopback networking is mostly here, and no
    process is charged for it). Steal (the hypervisor's) is no work of this machine."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return user + nice + system, irq + softirq


def machine_busy_ticks() -> int:
    return sum(machine_ticks())


def busy_cores(seconds: float = 2.0) -> float:
    """How many CPUs the machine keeps busy, measured over `seconds`."""
    before, started = machine_busy_ticks(), time.monotonic()
    time.sleep(seconds)
    return (machine_busy_ticks() - before) * _TICK_MS / 1000 / (time.monotonic() - started)


def wait_for_quiet(threshold: float, timeout: float) -> float:
    """Wait until the rest of the machine keeps fewer than `threshold` CPUs busy (other
    sessions' tests disturb a measurement); give up after `timeout` s. Returns the last
    reading."""
    deadline = time.monotonic() + timeout
    while True:
        busy = busy_cores()
        if busy < threshold or time.monotonic() > deadline:
            return busy
        print(f"loadtests: waiting for a quiet machine ({busy:.2f} CPUs busy)",
              file=sys.stderr, flush=True)


def _listener_pid(port: int) -> int | None:
    """The process that listens on a TCP port of this machine, from /proc/net/tcp* and the
    processes' socket descriptors (read only; nothing is signalled)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(cols[9])
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def server_pids(url: str, default_port: int, program: str) -> list[int]:
    """The PIDs of a broker or store server on this machine: the one listening on the URL's
    port when the URL names this machine, else every process named `program`."""
    parts = urlsplit(url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        return []
    pid = _listener_pid(parts.port or default_port)
    if pid is not None:
        return [pid]
    return [p for p, (_, name) in _proc_table().items() if name == program]


@dataclass
class Groups:
    """The processes of each component, resolved once before the load (trees by root)."""

    pids: dict[str, list[int]]

    def add(self, group: str, pid: int) -> None:
        self.pids = {**self.pids, group: [pid]}  # one assignment: the sampler may be reading

    @classmethod
    def resolve(cls, roots: dict[str, list[int]]) -> Groups:
        table = _proc_table()
        return cls({group: [p for root in pids for p in _tree(table, root)]
                    for group, pids in roots.items()})

    def ticks(self) -> dict[str, int]:
        """CPU ticks so far per group, and `machine`: the whole machine's busy ticks."""
        ticks = {group: sum(_cpu_ticks(p) for p in pids) for group, pids in self.pids.items()}
        ticks["machine"], ticks["interrupts"] = machine_ticks()
        return ticks

    def rss_kb(self, group: str) -> int:
        return sum(_rss_kb(p) for p in self.pids.get(group, []))


@dataclass
class Sample:
    at: float  # epoch seconds
    api_rss_kb: int
    ticks: dict[str, int]


class Sampler(threading.Thread):
    """Once a second: the API's resident memory and the CPU ticks of every component."""

    def __init__(self, groups: Groups) -> None:
        super().__init__(daemon=True)
        self.groups = groups
        self.stop_event = threading.Event()
        self.samples: list[Sample] = []

    def sample(self) -> None:
        self.samples.append(Sample(time.time(), self.groups.rss_kb("api"), self.groups.ticks()))

    def run(self) -> None:
        self.sample()
        while not self.stop_event.wait(1.0):
            self.sample()
        self.sample()


def write_resources(samples: list[Sample], start: float, path: Path) -> None:
    groups = sorted(g for g in samples[0].ticks if g != "machine") if samples else []
    if "interrupts" in groups:  # /proc/stat's irq + softirq, not a process
        groups.append(groups.pop(groups.index("interrupts")))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["elapsed_s", "api_rss_kb", *(f"cpu_cores_{g}" for g in groups)])
        for before, now in itertools.pairwise(samples):
            span = max(1e-6, now.at - before.at)
            writer.writerow([round(now.at - start, 3), now.api_rss_kb,
                             *(round(max(0, now.ticks.get(g, 0) - before.ticks.get(g, 0))
                                     * _TICK_MS / 1000 / span, 3) for g in groups)])


# --- the stack ----------------------------------------------------------------------------


class Stack:
    def __init__(self, args: argparse.Namespace, out: Path, baseline: bool) -> None:
        self.args = args
        self.out = out
        self.baseline = baseline
        self.run_id = uuid.uuid4().hex[:8]
        self.port = args.port or _free_port()
        self.amqp_url = _real_url("REFERENCE_BROKER_URL", DEFAULT_AMQP)
        self.redis_url = _real_url("REFERENCE_STORE_URL", DEFAULT_REDIS)
        self.queue = f"loadtest-{self.run_id}"
        self.prefix = f"lt{self.run_id}:"
        self.secret = secrets.token_urlsafe(32)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("REFERENCE_")}
        return {
            **clean,
            "REFERENCE_BROKER_URL": self.amqp_url,
            "REFERENCE_STORE_URL": self.redis_url,
            "REFERENCE_QUEUE": self.queue,
            "REFERENCE_KEY_PREFIX": self.prefix,
            "REFERENCE_JWT_SECRET": self.secret,
            "REFERENCE_COMPLETION": self.args.completion,
            "REFERENCE_POLL_INTERVAL_MS": str(self.args.poll_interval_ms),
            "REFERENCE_REQUEST_TIMEOUT_S": str(self.args.request_timeout_s),
            "REFERENCE_LOG_LEVEL": "WARNING",
        }

    def process_roots(self) -> dict[str, list[int]]:
        """Root pids of the API and of the core workers (each with its children)."""
        return {"api": [self.procs[0].pid], "workers": [p.pid for p in self.procs[1:]]}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.out / f"{name}.log").open("wb")
        proc = subprocess.Popen([sys.executable, *argv], env=self.env(), cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        a = self.args
        if self.baseline:
            self._spawn("api", ["-m", "reference.loadtests.baseline", "api", "--port",
                                str(self.port), "--workers", str(a.api_workers)])
            for i in range(a.core_workers):
                self._spawn(f"worker{i}", ["-m", "reference.loadtests.baseline", "worker",
                                           "--concurrency", str(a.concurrency)])
        else:
            self._spawn("api", ["-m", "reference", "serve", "--port", str(self.port),
                                "--workers", str(a.api_workers)])
            for i in range(a.core_workers):
                self._spawn(f"worker{i}", ["-m", "reference", "worker",
                                           "--concurrency", str(a.concurrency)])
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise SystemExit(f"loadtests: a process of the stack exited; see {self.out}/*.log")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        time.sleep(1.0)  # let the workers finish consuming set-up
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"loadtests: the stack did not answer within {timeout:g} s")

    def stop(self) -> None:
        """SIGTERM to the processes this run started (by their Popen), then their cleanup."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        asyncio.run(self._cleanup())

    async def _cleanup(self) -> None:
        import aiormq
        import redis.asyncio as aioredis

        try:
            conn = await aiormq.connect(self.amqp_url)
            channel = await conn.channel()
            for name in (self.queue, self.queue + ".dlq"):
                await channel.queue_delete(name)
            await conn.close()
        except Exception as exc:  # cleanup is best effort; say so
            print(f"loadtests: could not delete queue {self.queue}: {exc}", file=sys.stderr)
        client = aioredis.from_url(self.redis_url)
        batch: list[bytes] = []
        async for key in client.scan_iter(match=self.prefix + "*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
        await client.aclose()


# --- what each response brought -------------------------------------------------------------


@dataclass
class Row:
    at: float  # epoch seconds when the response was complete
    status: int
    ok: bool  # the expected status (locust), a 2xx (wrk)
    latency: float | None  # client-side ms (locust only: wrk's Lua cannot see it)
    parts: dict[str, float]  # Server-Timing parts present, ms


def read_rows(path: Path) -> tuple[float, list[Row]]:
    """The drivers' response CSV: the load's start (epoch s) and the rows, by time."""
    rows: list[Row] = []
    start: float | None = None
    if not path.exists():
        return time.time(), rows
    with path.open() as handle:
        for rec in csv.DictReader(handle):
            t0 = float(rec["t0"])
            start = t0 if start is None else min(start, t0)
            status = int(rec["status"])
            ok = rec["ok"] == "1" if "ok" in rec else 200 <= status < 300
            latency = float(rec["latency"]) if "latency" in rec else None
            parts = {p: float(rec[p]) for p in PARTS if float(rec[p]) >= 0}
            rows.append(Row(t0 + float(rec["t"]), status, ok, latency, parts))
    rows.sort(key=lambda r: r.at)
    return (start if start is not None else time.time()), rows


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99)}


def timeline(rows: list[Row], start: float, samples: list[Sample]) -> list[dict[str, Any]]:
    """Per second of load: throughput, failures, latency percentiles (client-side when the
    driver measured it, else none), the Server-Timing parts (mean and percentiles), CPU cores
    used by each component and the API's memory."""
    buckets: dict[int, list[Row]] = {}
    for row in rows:
        buckets.setdefault(int(row.at - start), []).append(row)
    if not buckets:
        return []
    end = rows[-1].at
    last = max(buckets)
    if last > 0 and end - (start + last) < 0.5:
        last -= 1  # a last second that is mostly after the load says nothing per second
    out: list[dict[str, Any]] = []
    for second in range(last + 1):
        got = buckets.get(second, [])
        width = min(1.0, max(1e-3, end - (start + second)))  # the last second may be partial
        entry: dict[str, Any] = {
            "t": second, "requests": len(got), "rps": round(len(got) / width, 1),
            "failures": sum(not r.ok for r in got),
            "latency_ms": percentiles([r.latency for r in got if r.latency is not None]),
        }
        for part in PARTS:
            values = [r.parts[part] for r in got if part in r.parts]
            entry[f"{part}_ms"] = {**percentiles(values),
                                   "mean": round(sum(values) / len(values), 3) if values else None}
        entry.update(_resources_in(samples, start + second, start + second + width))
        out.append(entry)
    return out


def _resources_in(samples: list[Sample], begin: float, end: float) -> dict[str, Any]:
    """CPU cores used per component between the samples around [begin, end), and the RSS."""
    if len(samples) < 2:
        return {"cpu_cores": {}, "api_rss_mib": None}
    times = [s.at for s in samples]
    i = max(0, min(len(samples) - 2, bisect.bisect_right(times, begin) - 1))
    j = max(i + 1, min(len(samples) - 1, bisect.bisect_left(times, end)))
    a, b = samples[i], samples[j]
    span = max(1e-6, b.at - a.at)
    cores = {g: max(0.0, (b.ticks[g] - a.ticks.get(g, 0)) * _TICK_MS / 1000 / span)
             for g in b.ticks if g in a.ticks or g == "driver"}
    machine = cores.pop("machine", None)
    interrupts = cores.pop("interrupts", None)
    if machine is not None:  # other processes on the machine: other sessions, the sampler
        cores["other"] = max(0.0, machine - sum(cores.values()))
    if interrupts is not None:
        cores["interrupts"] = interrupts
    return {"cpu_cores": {g: round(v, 3) for g, v in cores.items()},
            "api_rss_mib": round(b.api_rss_kb / 1024, 1) if b.api_rss_kb else None}


def memory_at(samples: list[Sample], rows: list[Row], marks: tuple[int, ...]
              ) -> dict[str, float | None]:
    """API RSS (MiB) when the cumulative request count first reached each mark."""
    out: dict[str, float | None] = {}
    for mark in marks:
        if len(rows) < mark:
            out[str(mark)] = None
            continue
        when = rows[mark - 1].at
        near = [s.api_rss_kb for s in samples if s.at >= when and s.api_rss_kb]
        out[str(mark)] = round(near[0] / 1024, 1) if near else None
    return out


# --- the drivers -----------------------------------------------------------------------------


def _drive(cmd: list[str], env: dict[str, str], log_path: Path, timeout: float,
           on_start: Callable[[int], None] | None) -> None:
    """Run the load generator to its end (it stops by itself; killed past `timeout`)."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        if on_start is not None:
            on_start(proc.pid)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
            raise
    if code != 0:
        raise subprocess.CalledProcessError(code, cmd)


def run_locust(args: argparse.Namespace, host: str, secret: str, out: Path,
               on_start: Callable[[int], None] | None = None) -> dict[str, Any]:
    env = {**os.environ, "LOADTEST_SCENARIO": args.scenario, "LOADTEST_JWT_SECRET": secret,
           "LOADTEST_REQUEST_TIMEOUT_S": str(args.request_timeout_s),
           "LOADTEST_SUMMARY": str(out / "locust_summary.json"),
           "LOADTEST_RESPONSES": str(out / "responses.csv"),
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
           "--headless", "--only-summary", "-u", str(args.users), "-r", str(args.spawn_rate),
           "-t", f"{args.duration:g}s", "--stop-timeout", "10", "--host", host,
           "--csv", str(out / "locust"), "--csv-full-history", "--html",
           str(out / "report.html"), "--exit-code-on-error", "0"]
    _drive(cmd, env, out / "locust.log", args.duration + 120, on_start)
    measured: dict[str, Any] = json.loads((out / "locust_summary.json").read_text())
    return measured


def wrk_token(secret: str, duration: float) -> str:
    import jwt

    claims = {"sub": "loadtest", "exp": int(time.time() + duration + 3600),
              "roles": ["users:write"]}
    return jwt.encode(claims, secret, algorithm="HS256")


def run_wrk(args: argparse.Namespace, host: str, secret: str, out: Path, *,
            duration: float, name: str = "wrk",
            on_start: Callable[[int], None] | None = None) -> dict[str, Any]:
    """wrk for `duration` s; returns its figures (from the Lua script's done())."""
    env = {**os.environ, "LOADTEST_WRK_TOKEN": wrk_token(secret, duration),
           "LOADTEST_WRK_SCENARIO": args.scenario, "LOADTEST_WRK_RUN": uuid.uuid4().hex[:8],
           "LOADTEST_WRK_OUT": str(out / name)}
    cmd = ["wrk", "-t", str(args.threads), "-c", str(args.users), "-d", f"{int(duration)}s",
           "--timeout", f"{int(args.request_timeout_s + 5)}s",
           "-s", str(ROOT / "loadtests" / "wrk.lua"), host]
    _drive(cmd, env, out / f"{name}.log", duration + args.request_timeout_s + 60, on_start)
    figures: dict[str, Any] = json.loads((out / f"{name}.json").read_text())
    return figures


def wrk_measured(figures: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    """summary.json's load figures from wrk's own (requests, latency, socket errors) and the
    rows (status counts, Server-Timing parts)."""
    requests = int(figures["requests"])
    duration = max(1e-9, figures["duration_us"] / 1e6)
    errors = {k: int(figures["errors"][k]) for k in ("connect", "read", "write", "timeout")}
    statuses = Counter(r.status for r in rows)
    non_2xx = sum(n for status, n in statuses.items() if not 200 <= status < 300)
    latency = {k: round(v / 1000, 3) for k, v in figures["latency_us"].items()}
    return {
        "requests": requests,
        "failures": non_2xx + sum(errors.values()),
        "non_2xx": non_2xx,
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "socket_errors": errors,
        "duration_measured_s": round(duration, 3),
        "throughput_rps": round(requests / duration, 1),
        "latency_ms": latency,  # wrk's own, client side, exact to the microsecond
        **{f"{part}_ms": percentiles([r.parts[part] for r in rows if part in r.parts])
           for part in PARTS},
    }


# --- one measurement ---------------------------------------------------------------------------


@dataclass
class Measured:
    label: str
    summary: dict[str, Any]
    seconds: list[dict[str, Any]] = field(default_factory=list)


def measure(args: argparse.Namespace, baseline: bool, out: Path) -> Measured:
    """Start a stack (unless --host), load it, and read what it cost."""
    out.mkdir(parents=True, exist_ok=True)
    stack: Stack | None = None
    sampler: Sampler | None = None
    if args.host:
        host = args.host
        secret = os.environ.get("REFERENCE_JWT_SECRET", "")
        if not secret:
            raise SystemExit("loadtests: --host needs REFERENCE_JWT_SECRET, the stack's key")
        amqp_url = _real_url("REFERENCE_BROKER_URL", DEFAULT_AMQP)
        redis_url = _real_url("REFERENCE_STORE_URL", DEFAULT_REDIS)
    else:
        stack = Stack(args, out, baseline)
        host, secret = stack.url, stack.secret
        amqp_url, redis_url = stack.amqp_url, stack.redis_url
    try:
        if stack is not None:
            stack.start()
        roots = stack.process_roots() if stack is not None else {}
        roots["rabbitmq"] = server_pids(amqp_url, 5672, "beam.smp")
        roots["redis"] = server_pids(redis_url, 6379, "redis-server")
        groups = Groups.resolve({g: pids for g, pids in roots.items() if pids})
        if args.driver == "wrk" and args.warmup > 0:
            run_wrk(args, host, secret, out, duration=max(1, round(args.warmup)),
                    name="wrk-warmup")
            time.sleep(0.5)  # the requests wrk abandoned at its end finish outside the window
        sampler = Sampler(groups)
        sampler.start()
        cpu_before = groups.ticks()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = _commandstats(redis_url)
        started = time.monotonic()
        if args.driver == "wrk":
            figures = run_wrk(args, host, secret, out, duration=args.duration,
                              on_start=lambda pid: groups.add("driver", pid))
        else:
            measured = run_locust(args, host, secret, out,
                                  on_start=lambda pid: groups.add("driver", pid))
        window = time.monotonic() - started
        after = _commandstats(redis_url)
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_after = groups.ticks()
    finally:
        if sampler is not None:
            sampler.stop_event.set()
            sampler.join(5)
        if stack is not None:
            stack.stop()
    start, rows = read_rows(out / ("wrk.csv" if args.driver == "wrk" else "responses.csv"))
    if args.driver == "wrk":
        measured = wrk_measured(figures, rows)
    else:
        statuses = Counter(r.status for r in rows)
        measured["non_2xx"] = sum(n for s, n in statuses.items() if not 200 <= s < 300)
        measured["status_counts"] = {str(k): v for k, v in sorted(statuses.items())}
    samples = sampler.samples if sampler else []
    write_resources(samples, start, out / "memory.csv")
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    requests = max(1, measured["requests"])
    cpu_ms: dict[str, float | None] = {g: None for g in COMPONENTS}
    cpu_ms.update({g: (cpu_after[g] - cpu_before[g]) * _TICK_MS for g in cpu_before})
    cpu_ms["driver"] = 1000 * ((children_after.ru_utime + children_after.ru_stime)
                               - (children_before.ru_utime + children_before.ru_stime))
    machine_ms = cpu_ms.pop("machine") or 0.0
    interrupts_ms = cpu_ms.pop("interrupts") or 0.0
    other_ms = machine_ms - sum(v or 0.0 for v in cpu_ms.values())
    summary = {
        "driver": args.driver,
        "users": args.users,
        "duration_s": args.duration,
        "completion": "baseline" if baseline else args.completion,
        "poll_interval_ms": args.poll_interval_ms,
        "scenario": args.scenario,
        "api_workers": args.api_workers,
        "core_workers": args.core_workers,
        "concurrency": args.concurrency,
        **({"connections": args.users, "threads": args.threads, "warmup_s": args.warmup}
           if args.driver == "wrk" else {}),
        "queue": stack.queue if stack else None,
        "key_prefix": stack.prefix if stack else None,
        **measured,
        "redis_reads_per_request": round(sum(delta.get(c, 0) for c in READ_COMMANDS)
                                         / requests, 3),
        "redis_commands_per_request": round(sum(v for k, v in delta.items()
                                                if k not in {"info"}) / requests, 3),
        # CPU time each part spent per completed request (whole machine: 2 CPUs here); the
        # driver is wrk or locust, on the same machine. None: not measurable (remote server).
        "cpu_ms_per_request": {g: None if ms is None else round(ms / requests, 3)
                               for g, ms in cpu_ms.items()},
        "redis_calls_per_request": {k: round(v / requests, 3) for k, v in sorted(delta.items())
                                    if v and k != "info"},
        "api_rss_mib_at_requests": memory_at(samples, rows, (10_000, 100_000)),
        # The rest of the machine meanwhile: other processes (other sessions, this script),
        # a noise indicator; and interrupts (loopback networking), charged to no process.
        "machine": {"cpus": os.cpu_count(),
                    "other_cores": round(max(0.0, other_ms) / 1000 / max(1e-6, window), 3),
                    "interrupts_ms_per_request": round(interrupts_ms / requests, 3)},
    }
    seconds = timeline(rows, start, samples)
    (out / "timeline.json").write_text(json.dumps(seconds) + "\n")
    return Measured("baseline" if baseline else f"product ({args.completion})", summary, seconds)


# --- the report's picture ------------------------------------------------------------------------

_COLOURS = {"api": "tab:blue", "workers": "tab:green", "rabbitmq": "tab:orange",
            "redis": "tab:red", "driver": "tab:gray", "interrupts": "tab:brown",
            "other": "black"}
_PARTS_COLOURS = {"queue": "tab:orange", "work": "tab:green", "notice": "tab:purple"}
_RUN_STYLES = ("-", "--")
_RUN_COLOURS = ("tab:blue", "tab:orange")


def _headline(m: Measured) -> str:
    s = m.summary
    lat = s["latency_ms"]
    return (f"{m.label}: {s['throughput_rps']:.0f} req/s, latency p50 {lat['p50']:.1f} / "
            f"p95 {lat['p95']:.1f} / p99 {lat['p99']:.1f} ms, {s['failures']} failed")


def plot(runs: list[Measured], path: Path) -> None:
    """The run over time, product and baseline in one figure: throughput, latency percentiles,
    the Server-Timing split, CPU per component, CPU per request, API memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = runs[0].summary
    fig, axes = plt.subplots(3, 2, figsize=(15, 11.5))
    (rps_ax, cpu_ax), (lat_ax, cost_ax), (split_ax, mem_ax) = axes
    client_side = any(m.seconds and m.seconds[0]["latency_ms"]["p50"] is not None for m in runs)
    for i, m in enumerate(runs):
        style, colour = _RUN_STYLES[i % 2], _RUN_COLOURS[i % 2]
        t = [e["t"] + 0.5 for e in m.seconds]
        rps_ax.plot(t, [e["rps"] for e in m.seconds], style, color=colour,
                    label=f"{m.label} ({m.summary['throughput_rps']:.0f} req/s overall)")
        failed = [(x, e["failures"]) for x, e in zip(t, m.seconds, strict=True) if e["failures"]]
        if failed:
            rps_ax.plot(*zip(*failed, strict=True), "x", color="tab:red",
                        label=f"{m.label}: failed per s")
        key = "latency_ms" if client_side else "total_ms"
        for q, width in (("p50", 2.0), ("p95", 1.2), ("p99", 0.7)):
            values = [e[key][q] for e in m.seconds]
            overall = m.summary["latency_ms"][q]
            lat_ax.plot(t, values, style, color=colour, linewidth=width,
                        label=f"{m.label} {q} (whole run, client: {overall:.1f} ms)")
        if not client_side:  # a closed loop: mean latency = connections / throughput
            lat_ax.plot(t, [1000 * m.summary["users"] / e["rps"] if e["rps"] else None
                            for e in m.seconds], style, color="black", linewidth=0.8,
                        label=f"{m.label}: client mean (connections / req/s)")
        if any(e["queue_ms"]["mean"] is not None for e in m.seconds):
            bottom = [0.0] * len(t)
            for part in ("queue", "work", "notice"):
                values = [e[f"{part}_ms"]["mean"] or 0.0 for e in m.seconds]
                top = [b + v for b, v in zip(bottom, values, strict=True)]
                split_ax.fill_between(t, bottom, top, step="mid", alpha=0.45,
                                      color=_PARTS_COLOURS[part], label=f"{m.label}: {part}")
                bottom = top
        split_ax.plot(t, [e["total_ms"]["mean"] for e in m.seconds], style, color=colour,
                      label=f"{m.label}: total (API)")
        for group in (*COMPONENTS, "interrupts", "other"):
            values = [e["cpu_cores"].get(group) for e in m.seconds]
            if any(v is not None for v in values):
                cpu_ax.plot(t, [v or 0.0 for v in values], style, color=_COLOURS[group],
                            label=group if i == 0 else None)
        mem = [(x, e["api_rss_mib"]) for x, e in zip(t, m.seconds, strict=True)
               if e["api_rss_mib"] is not None]
        if mem:
            mem_ax.plot(*zip(*mem, strict=True), style, color=colour, label=m.label)
    # CPU per request, by component: grouped bars
    width = 0.8 / len(runs)
    bars_of = (*COMPONENTS, "interrupts")
    for i, m in enumerate(runs):
        per = {**m.summary["cpu_ms_per_request"], "interrupts": m.summary.get(
            "machine", {}).get("interrupts_ms_per_request")}
        xs = [k + i * width for k in range(len(bars_of))]
        values = [per.get(g) or 0.0 for g in bars_of]
        bars = cost_ax.bar(xs, values, width, color=_RUN_COLOURS[i % 2], label=m.label,
                           hatch="//" if i else None, edgecolor="white")
        cost_ax.bar_label(bars, fmt="%.2f", fontsize=8)
    cost_ax.set_xticks([k + width * (len(runs) - 1) / 2 for k in range(len(bars_of))],
                       list(bars_of))
    cost_ax.set_ylabel("CPU ms per request")
    cost_ax.set_title("CPU per completed request, by component (SUT: api..redis)")
    rps_ax.set_ylabel("requests / s")
    rps_ax.set_title("throughput per second")
    lat_ax.set_ylabel("ms, client side" if client_side
                      else "ms, API side (Server-Timing total)")
    lat_ax.set_title("latency per second: p50 (thick), p95, p99 (thin)")
    split_ax.set_ylabel("ms (mean per second)")
    split_ax.set_title("where the time goes: Server-Timing queue + work + notice, and total")
    cpu_ax.set_ylabel("CPU cores")
    cpu_ax.set_title("CPU used per component" + (f" (solid: {runs[0].label}, dashed: "
                                                  f"{runs[1].label})" if len(runs) > 1 else ""))
    mem_ax.set_ylabel("MiB")
    mem_ax.set_title("API resident memory")
    for ax in (rps_ax, lat_ax, split_ax, cpu_ax, mem_ax):
        ax.set_xlabel("s since the load started")
        ax.grid(alpha=0.3)
        if ax is not mem_ax:
            ax.set_ylim(bottom=0)
    low, high = mem_ax.get_ylim()
    if high - low < 20:  # a flat line stays flat: no 0.1 MiB drawn as a cliff
        middle = (low + high) / 2
        mem_ax.set_ylim(middle - 10, middle + 10)
    for ax in (rps_ax, lat_ax, split_ax, cpu_ax, cost_ax, mem_ax):
        ax.legend(fontsize=7, loc="best")
    n = first["users"]
    load = (f"{n} connection{'s' if n > 1 else ''}" if first["driver"] == "wrk"
            else f"{n} user{'s' if n > 1 else ''}")
    fig.suptitle(f"{first['driver']}, {load}, {first['duration_s']:g} s, scenario "
                 f"{first['scenario']}\n" + "\n".join(_headline(m) for m in runs), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_runs(out: Path) -> list[Measured]:
    """The runs of a finished `loadtests.run` from its summary.json and timeline.json files."""
    summary = json.loads((out / "summary.json").read_text())
    runs = []
    for where, one in ((out, summary), (out / "baseline", summary.get("baseline"))):
        if one is not None:
            seconds = json.loads((where / "timeline.json").read_text())
            label = ("baseline" if one["completion"] == "baseline"
                     else f"product ({one['completion']})")
            runs.append(Measured(label, one, seconds))
    return runs


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    out: Path = args.out
    if args.replot:
        plot(load_runs(out), out / "plot.png")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if args.baseline:
        plan = [(True, out)]
    else:
        plan = [(False, out)]
        if args.with_baseline and not args.host:
            plan.append((True, out / "baseline"))
    runs = [measure(args, baseline, where) for baseline, where in plan]
    summary = dict(runs[0].summary)
    if len(runs) > 1:
        (out / "baseline" / "summary.json").write_text(
            json.dumps(runs[1].summary, indent=2) + "\n")
        summary["baseline"] = runs[1].summary
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(runs, out / "plot.png")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
