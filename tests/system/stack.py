"""Start the product as real processes (`reference serve`, `reference worker`) for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SECRET = "system-secret-" + "s" * 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Stack:
    tmp: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    procs: list[Proc] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> Proc:
        log = self.tmp / f"{name}.log"
        handle = log.open("wb")
        # A session of its own: Sanic's manager may killpg its group when a stop goes wrong,
        # and that group must not be pytest's.
        popen = subprocess.Popen([sys.executable, "-m", "reference", *args], env=self.env,
                                 stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def serve(self, workers: int = 1) -> Proc:
        proc = self._spawn("api", "serve", "--port", str(self.port), "--workers", str(workers))
        self.wait_ready()
        return proc

    def worker(self, name: str, concurrency: int = 4) -> Proc:
        proc = self._spawn(name, "worker", "--concurrency", str(concurrency))
        deadline = time.monotonic() + 20
        while "consuming" not in proc.text():
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {name} did not start:\n{proc.text()}")
            time.sleep(0.05)
        return proc

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                logs = "\n".join(p.text() for p in self.procs)
                raise AssertionError(f"stack not ready within {timeout} s:\n{logs}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=5)

    def finished_counts(self) -> Counter[str]:
        """How often each request id was finished (final record written), over all workers."""
        counts: Counter[str] = Counter()
        for proc in self.procs:
            for line in proc.text().splitlines():
                if "reference.worker: finished " in line:
                    counts[line.split("finished ", 1)[1].split()[0]] += 1
        return counts


def stack_env(amqp_url: str, redis_url: str, queue: str, prefix: str,
              **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFERENCE_")}
    return {
        **clean,
        "REFERENCE_BROKER_URL": amqp_url,
        "REFERENCE_STORE_URL": redis_url,
        "REFERENCE_QUEUE": queue,
        "REFERENCE_KEY_PREFIX": prefix,
        "REFERENCE_JWT_SECRET": SECRET,
        "REFERENCE_CLAIM_TTL_S": "2",
        "REFERENCE_REQUEST_TIMEOUT_S": "20",
        "REFERENCE_SHUTDOWN_TIMEOUT_S": "5",
        "REFERENCE_LOG_LEVEL": "DEBUG",
        **extra,
    }
