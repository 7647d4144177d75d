"""Schemathesis, every check and every phase, against the document a running server serves.

    python tests/schemathesis_run.py [more schemathesis run options]

Starts `reference serve` (memory://, a JWT secret of its own) on a free loopback port, waits
for /readyz, signs a token with every role the roles policy names, runs

    schemathesis run <base>/openapi.json --checks all
        --phases examples,coverage,fuzzing,stateful --seed ... --max-examples ...

prints schemathesis's output, stops the server by its pid (on every way out), and exits with
schemathesis's status. SCHEMATHESIS_SEED, SCHEMATHESIS_MAX_EXAMPLES and SCHEMATHESIS_WORKERS
change the defaults. One worker: with two, CPython 3.11's `ast.parse` (which hypothesis calls
from both threads to describe a strategy) now and then raises "AST constructor recursion depth
mismatch", and one worker is as fast here (the time goes to waiting on jobs).

The server runs with a 2 s request timeout (a job of up to 600 s is valid input: a long one
gets its documented 504 with Location quickly, instead of holding a test for 30 s) and room for
many jobs at once.

This file is also the hooks module schemathesis loads (SCHEMATHESIS_HOOKS), for three things
the document cannot say; each is as narrow as it can be:

- `before_call` writes whole numbers in a JSON body as integers (2.0 as 2). JSON Schema counts
  2.0 as an integer and the contract does not (docs/contract.md: an integer param is "a JSON
  integer only (not `1.0`)"); no schema keyword tells the two spellings apart. The spelling
  changes, never whether the body is valid.
- `filter_failure` drops, on POST /jobs only, (1) "schema-valid request rejected" for a 422
  whose code is `job_failed`: `fail: true` is valid input that asks the job to fail, and the
  contract answers it 422 job_failed; (2) "server error" for a 504 whose body is the pending
  record (no `error`): a job may run 600 s, and one that outlasts the request timeout gets
  this documented 504 with Location. Schemathesis counts what it drops in its summary.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

SEED = 20261126
MAX_EXAMPLES = 100  # about 1.5 to 2 minutes on 2 cores
WORKERS = 1
READY_WITHIN_S = 60.0
# Every run starts from the seed alone: no crashes remembered from an earlier run replayed
# first (schemathesis keeps them in .schemathesis/ under the working directory).
CONFIG = "[cache]\nenabled = false\n"
LONG_RUNNING = "POST /jobs"  # the one built-in operation whose work can outlast the timeout
DROPPED_ENV = "SCHEMATHESIS_RUN_DROPPED"  # where filter_failure notes what it drops


# --- the hooks (this module, loaded by schemathesis through SCHEMATHESIS_HOOKS) --------------


def _integers_as_integers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integers_as_integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers_as_integers(v) for v in value]
    return value


def documented_outcome(label: str, failure_code: str, status: int, body: Any) -> bool:
    """Whether a failure schemathesis reports is an answer the contract prescribes for valid
    input on POST /jobs (see the module's docstring)."""
    if label != LONG_RUNNING or not isinstance(body, dict):
        return False
    error = body.get("error")
    if failure_code == "ST202" and status == 422:
        return isinstance(error, dict) and error.get("code") == "job_failed"
    if failure_code == "ST101" and status == 504:
        # The pending 504: the record's fields, and the envelope with code `timeout`.
        return (isinstance(error, dict) and error.get("code") == "timeout"
                and body.get("status") in {"Queued", "Running"})
    return False


def _register_hooks() -> None:
    import schemathesis

    @schemathesis.hook
    def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
        """Whole numbers in a JSON body as integers: the same JSON Schema value, the
        spelling the contract reads as an integer."""
        body = getattr(case, "body", None)
        if isinstance(body, dict | list):
            case.body = _integers_as_integers(body)

    @schemathesis.hook
    def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
        """Keep every failure except the documented outcomes of POST /jobs."""
        try:
            body = json.loads(response.content or b"null")
        except ValueError:
            body = None
        if not documented_outcome(case.operation.label, failure.code, response.status_code,
                                  body):
            return True
        tally = os.environ.get(DROPPED_ENV)
        if tally:
            with open(tally, "a") as out:
                out.write(f"{failure.code} {response.status_code} {case.operation.label}\n")
        return False


def _loaded_by_schemathesis() -> bool:
    hooks = os.environ.get("SCHEMATHESIS_HOOKS")
    return bool(hooks) and Path(hooks).resolve() == Path(__file__).resolve()


if __name__ != "__main__" and _loaded_by_schemathesis():
    _register_hooks()


# --- the run ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"reference serve exited with {server.returncode} before ready")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"reference serve not ready within {READY_WITHIN_S:.0f} s")


def _every_role() -> str:
    from reference.actions import load_actions
    from reference.policy import RolesPolicy

    registry = load_actions(os.environ.get("REFERENCE_ACTIONS", ""))
    policy = RolesPolicy.load(os.environ.get("REFERENCE_ROLES_POLICY") or None, registry)
    return ",".join(sorted(policy.all_roles))


def _token(env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "reference", "token", "--sub", "schemathesis",
                          "--roles", _every_role()], env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


def _tell_dropped(path: Path) -> None:
    lines = path.read_text().splitlines() if path.exists() else []
    for line, n in sorted(Counter(lines).items()):
        code, status, label = line.split(" ", 2)
        why = ("job_failed: the job failed as asked" if code == "ST202"
               else "the job outlasted the request timeout")
        print(f"schemathesis_run: dropped {n} x {code} ({status} on {label}: {why})")


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main(argv: list[str]) -> int:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ,
           "REFERENCE_BROKER_URL": "memory://", "REFERENCE_STORE_URL": "memory://",
           "REFERENCE_JWT_SECRET": secrets.token_urlsafe(32),
           "REFERENCE_REQUEST_TIMEOUT_S": "2", "REFERENCE_CONCURRENCY": "1024",
           "REFERENCE_SHUTDOWN_TIMEOUT_S": "1", "REFERENCE_LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory(prefix="schemathesis-") as tmp:
        log_path = Path(tmp) / "serve.log"
        config = Path(tmp) / "schemathesis.toml"
        config.write_text(CONFIG)
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "reference", "serve", "--host", "127.0.0.1",
                 "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        print(f"schemathesis_run: reference serve pid {server.pid} on {base}", flush=True)
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            _wait_ready(base, server)
            token = _token(env)
            command = [
                sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run",
                f"{base}/openapi.json", "--checks", "all",
                "--phases", "examples,coverage,fuzzing,stateful",
                "--seed", os.environ.get("SCHEMATHESIS_SEED", str(SEED)),
                "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES",
                                                 str(MAX_EXAMPLES)),
                "--workers", os.environ.get("SCHEMATHESIS_WORKERS", str(WORKERS)),
                "--generation-database", "none", "--request-timeout", "20", "--no-color",
                "-H", f"Authorization: Bearer {token}", *argv]
            dropped = Path(tmp) / "dropped.txt"
            st_env = {**os.environ, "SCHEMATHESIS_HOOKS": str(Path(__file__).resolve()),
                      DROPPED_ENV: str(dropped)}
            status = subprocess.run(command, env=st_env, check=False).returncode
            _tell_dropped(dropped)
        finally:
            _stop(server)
            signal.signal(signal.SIGTERM, previous)
            if server.returncode not in (0, -signal.SIGINT):
                print(f"schemathesis_run: reference serve ended with {server.returncode}; "
                      f"its log:\n{log_path.read_text(errors='replace')[-4000:]}")
    print(f"schemathesis_run: schemathesis exited with {status}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
