"""`python -m reference.loadtests.run`: start a stack, run locust headless, report (SPEC §6).

Starts `reference serve --workers N` and M `reference worker` processes (or the hand-written
baseline with --baseline) on real RabbitMQ and Redis, with a queue and key prefix of its own,
runs locust for a fixed time, stops what it started, and writes into --out: locust's CSV and
HTML report, plot.png, memory.csv (API resident memory over time) and summary.json.
`--host URL` runs locust against a stack that is already running instead.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
READ_COMMANDS = ("get", "mget")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reference.loadtests.run", description=__doc__)
    p.add_argument("--users", type=int, default=64)
    p.add_argument("--spawn-rate", type=float, default=64)
    p.add_argument("--duration", type=float, default=20, help="seconds of load")
    p.add_argument("--api-workers", type=int, default=1)
    p.add_argument("--core-workers", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=64, help="per core worker")
    p.add_argument("--completion", default="poll", choices=["poll", "batch", "push"])
    p.add_argument("--poll-interval-ms", type=float, default=5.0)
    p.add_argument("--scenario", default="lifecycle")
    p.add_argument("--request-timeout-s", type=float, default=30.0)
    p.add_argument("--out", type=Path, default=Path("loadtest-out"))
    p.add_argument("--host", help="run against this already running stack")
    p.add_argument("--baseline", action="store_true",
                   help="measure the hand-written baseline pipeline instead of the product")
    p.add_argument("--port", type=int, default=0, help="API port (0: a free one)")
    return p.parse_args(argv)


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


# --- processes: memory and CPU from /proc ---------------------------------------------------

_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, CPU ticks used so far) for every process."""
    table: dict[int, tuple[int, str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return table


def _tree(table: dict[int, tuple[int, str, int]], root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        current = todo.pop()
        if current in table:
            found.append(current)
        todo += children.get(current, [])
    return found


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants (Sanic serves from children)."""
    total = 0
    for member in _tree(_proc_table(), pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_snapshot(groups: dict[str, list[int]], names: dict[str, str]) -> dict[str, int]:
    """CPU ticks used so far by each group: process trees (by root pid) or programs (by name)."""
    table = _proc_table()
    out = {group: sum(table[p][2] for root in roots for p in _tree(table, root))
           for group, roots in groups.items()}
    for group, program in names.items():
        out[group] = sum(ticks for _, name, ticks in table.values() if name == program)
    return out


class MemorySampler(threading.Thread):
    def __init__(self, pid: int, path: Path) -> None:
        super().__init__(daemon=True)
        self.pid, self.path = pid, path
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, int]] = []

    def run(self) -> None:
        start = time.time()
        while not self.stop_event.wait(1.0):
            self.samples.append((time.time() - start, _tree_rss_kb(self.pid)))
        with self.path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["elapsed_s", "api_rss_kb"])
            writer.writerows(self.samples)


# --- the stack ----------------------------------------------------------------------------


class Stack:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
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

    def process_groups(self) -> dict[str, list[int]]:
        """Root pids of the API and of the core workers (each with its children)."""
        return {"api": [self.procs[0].pid], "workers": [p.pid for p in self.procs[1:]]}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.out / f"{name}.log").open("wb")
        proc = subprocess.Popen([sys.executable, *argv], env=self.env(), cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start(self) -> subprocess.Popen[bytes]:
        a = self.args
        if a.baseline:
            api = self._spawn("api", ["-m", "reference.loadtests.baseline", "api", "--port",
                                      str(self.port), "--workers", str(a.api_workers)])
            for i in range(a.core_workers):
                self._spawn(f"worker{i}", ["-m", "reference.loadtests.baseline", "worker",
                                           "--concurrency", str(a.concurrency)])
        else:
            api = self._spawn("api", ["-m", "reference", "serve", "--port", str(self.port),
                                      "--workers", str(a.api_workers)])
            for i in range(a.core_workers):
                self._spawn(f"worker{i}", ["-m", "reference", "worker",
                                           "--concurrency", str(a.concurrency)])
        self._wait_healthy()
        return api

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


# --- locust and the report ----------------------------------------------------------------


def run_locust(args: argparse.Namespace, host: str, secret: str, out: Path) -> None:
    env = {**os.environ, "LOADTEST_SCENARIO": args.scenario, "LOADTEST_JWT_SECRET": secret,
           "LOADTEST_REQUEST_TIMEOUT_S": str(args.request_timeout_s),
           "LOADTEST_SUMMARY": str(out / "locust_summary.json"),
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
           "--headless", "--only-summary", "-u", str(args.users), "-r", str(args.spawn_rate),
           "-t", f"{args.duration:g}s", "--stop-timeout", "10", "--host", host,
           "--csv", str(out / "locust"), "--csv-full-history", "--html",
           str(out / "report.html"), "--exit-code-on-error", "0"]
    with (out / "locust.log").open("wb") as log:
        subprocess.run(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                       check=True, timeout=args.duration + 120)


def memory_at(samples: list[tuple[float, int]], history: Path, marks: tuple[int, ...]
              ) -> dict[str, float | None]:
    """API RSS (MiB) when the cumulative request count first reached each mark."""
    crossing: dict[int, float] = {}
    start: float | None = None
    if history.exists():
        with history.open() as handle:
            done_at: dict[float, int] = {}
            for row in csv.DictReader(handle):
                # HTTP entries only: "Aggregated" also counts the Server-Timing entries.
                if row["Name"] == "Aggregated" or row["Type"] == "timing":
                    continue
                t = float(row["Timestamp"])
                done_at[t] = done_at.get(t, 0) + int(row["Total Request Count"])
            for t in sorted(done_at):
                start = t if start is None else start
                for mark in marks:
                    if mark not in crossing and done_at[t] >= mark:
                        crossing[mark] = t - start
    out: dict[str, float | None] = {}
    for mark in marks:
        when = crossing.get(mark)
        near = [kb for s, kb in samples if when is not None and s >= when]
        out[str(mark)] = round(near[0] / 1024, 1) if near else None
    return out


def plot(summary: dict[str, Any], samples: list[tuple[float, int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, mem) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = ["latency", "queue", "work", "notice"]
    keys = ["latency_ms", "queue_ms", "work_ms", "notice_ms"]
    width = 0.25
    for i, q in enumerate(["p50", "p95", "p99"]):
        values = [summary[k][q] or 0 for k in keys]
        bars.bar([x + i * width for x in range(len(names))], values, width, label=q)
    bars.set_xticks([x + width for x in range(len(names))], names)
    bars.set_ylabel("ms")
    bars.set_yscale("symlog", linthresh=1)
    bars.legend()
    bars.set_title(f"{summary['completion']}: {summary['throughput_rps']:.0f} req/s, "
                   f"{summary['users']} users")
    if samples:
        mem.plot([s for s, _ in samples], [kb / 1024 for _, kb in samples])
    mem.set_xlabel("s")
    mem.set_ylabel("API RSS (MiB)")
    mem.set_title("API memory")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stack: Stack | None = None
    sampler: MemorySampler | None = None
    if args.host:
        host = args.host
        secret = os.environ.get("REFERENCE_JWT_SECRET", "")
        if not secret:
            raise SystemExit("loadtests: --host needs REFERENCE_JWT_SECRET, the stack's key")
        redis_url = _real_url("REFERENCE_STORE_URL", DEFAULT_REDIS)
    else:
        stack = Stack(args, out)
        host, secret, redis_url = stack.url, stack.secret, stack.redis_url
    try:
        if stack is not None:
            api = stack.start()
            sampler = MemorySampler(api.pid, out / "memory.csv")
            sampler.start()
        groups = stack.process_groups() if stack is not None else {}
        servers = {"rabbitmq": "beam.smp", "redis": "redis-server"}
        cpu_before = cpu_snapshot(groups, servers)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        before = _commandstats(redis_url)
        run_locust(args, host, secret, out)
        after = _commandstats(redis_url)
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_after = cpu_snapshot(groups, servers)
    finally:
        if sampler is not None:
            sampler.stop_event.set()
            sampler.join(5)
        if stack is not None:
            stack.stop()
    measured = json.loads((out / "locust_summary.json").read_text())
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    requests = max(1, measured["requests"])
    samples = sampler.samples if sampler else []
    cpu_ms = {group: (cpu_after[group] - cpu_before[group]) * _TICK_MS for group in cpu_after}
    cpu_ms["locust"] = 1000 * ((children_after.ru_utime + children_after.ru_stime)
                               - (children_before.ru_utime + children_before.ru_stime))
    summary = {
        "users": args.users,
        "duration_s": args.duration,
        "completion": "baseline" if args.baseline else args.completion,
        "poll_interval_ms": args.poll_interval_ms,
        "scenario": args.scenario,
        "api_workers": args.api_workers,
        "core_workers": args.core_workers,
        "queue": stack.queue if stack else None,
        "key_prefix": stack.prefix if stack else None,
        **measured,
        "redis_reads_per_request": round(sum(delta.get(c, 0) for c in READ_COMMANDS)
                                         / requests, 3),
        "redis_commands_per_request": round(sum(v for k, v in delta.items()
                                                if k not in {"info"}) / requests, 3),
        # CPU time each part of the stack spent per HTTP request (whole machine: 2 CPUs here).
        "cpu_ms_per_request": {group: round(ms / requests, 3) for group, ms in cpu_ms.items()},
        "redis_calls_per_request": {k: round(v / requests, 3) for k, v in sorted(delta.items())
                                    if v and k != "info"},
        "api_rss_mib_at_requests": memory_at(samples, out / "locust_stats_history.csv",
                                             (10_000, 100_000)),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, samples, out / "plot.png")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
