"""The command line as a new user meets it: one-line errors, and `serve` that answers curl."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

PY = sys.executable


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFERENCE_")}
    return subprocess.run([PY, "-m", "reference", *args], capture_output=True, text=True,
                          timeout=60, env={**clean, **(env or {})})


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["serve", "--broker-url", "kafka://x"], {}, "unknown broker URL scheme"),
        (["serve", "--store-url", "redis://h:port/"], {}, "bad store URL"),
        (["serve", "--broker-url", "amqp://localhost/", "--store-url", "redis://localhost/"],
         {}, "no JWT key configured"),
        (["serve"], {"REFERENCE_PORT": "http"}, "REFERENCE_PORT='http' is not an integer"),
        (["serve", "--workers", "2"], {}, "memory:// lives in one process"),
        (["worker"], {}, "needs real broker and store URLs"),
        (["token", "--sub", "x"], {}, "no JWT secret configured"),
        (["token", "--sub", " "], {"REFERENCE_JWT_SECRET": "s" * 32}, "--sub must not be empty"),
        (["token", "--sub", "x", "--ttl", "0"], {"REFERENCE_JWT_SECRET": "s" * 32},
         "--ttl must be at least 1 second"),
        (["serve", "--port", "70000"], {}, "port 70000 is not a TCP port"),
        (["serve", "--host", "no.such.host.invalid"], {}, "cannot listen on no.such.host.invalid"),
    ],
)
def test_bad_configuration_is_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    """Each bad start-up is a single `reference: error:` line on stderr, exit 2, no traceback."""
    done = run_cli(*args, env=env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reference: error: ")
    assert message in lines[0]


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_unreachable_broker_gives_up_after_connect_timeout(command: str) -> None:
    """A broker that never answers: retried for REFERENCE_CONNECT_TIMEOUT_S, then one line
    (for serve too: it checks before its Sanic workers start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    done = run_cli(command, env={"REFERENCE_BROKER_URL": f"amqp://127.0.0.1:{port}/",
                                 "REFERENCE_STORE_URL": f"redis://127.0.0.1:{port}/",
                                 "REFERENCE_JWT_SECRET": "s" * 32,
                                 "REFERENCE_CONNECT_TIMEOUT_S": "0.5"})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("reference: error: could not reach the broker or store within 0.5 s")
    assert "Traceback" not in done.stderr


def test_token_signs_for_the_configured_secret() -> None:
    """`reference token` prints a JWT that carries the asked sub and roles."""
    import jwt

    secret = "cli-secret-" + "z" * 24
    done = run_cli("token", "--sub", "carol", "--roles", "a,b", "--ttl", "60",
                   env={"REFERENCE_JWT_SECRET": secret})
    claims = jwt.decode(done.stdout.strip(), secret, algorithms=["HS256"])
    assert (claims["sub"], claims["roles"]) == ("carol", ["a", "b"])
    assert claims["exp"] - claims["iat"] == 60


def test_serve_on_memory_answers_the_printed_curl() -> None:
    """`reference serve` prints a token and a curl line; that request gets 201 from the
    in-process worker, and SIGINT stops the server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFERENCE_")}
    proc = subprocess.Popen([PY, "-m", "reference", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean)
    try:
        out = ""
        assert proc.stdout is not None
        while "curl" not in out:
            line = proc.stdout.readline()
            assert line, f"serve exited early: {out}"
            out += line
        token = re.search(r"Bearer ([\w.-]+)", out)
        assert token is not None
        body = b'{"name": "Hong Gildong", "email": "hong@example.com"}'
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/users", data=body, method="POST",
            headers={"Authorization": f"Bearer {token.group(1)}",
                     "Content-Type": "application/json"})
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 201
                    assert response.headers["Location"] == "/users/1"
                    break
            except (ConnectionError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_simulate_reports_its_seeds_and_exits_zero_when_clean() -> None:
    """`reference simulate --seeds 2` runs two seeds and ends with the summary line."""
    done = run_cli("simulate", "--seeds", "2", "--start", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^2 seeds, 0 violations", done.stdout, re.M), done.stdout


def test_simulate_prints_one_line_per_failing_seed_with_its_replay(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A seed with violations gets one line with its replay command, and the exit code is 1."""
    from reference import cli
    from reference.fakes import simulation

    def fake_run(seed: int, **_: object) -> simulation.SeedResult:
        result = simulation.SeedResult(seed)
        if seed == 4:
            result.violate("settled", "1 deliveries left unsettled")
            result.violate("in flight", "worker w still has 1 in flight")
        return result

    monkeypatch.setattr(simulation, "run_seed", fake_run)
    monkeypatch.setattr(cli, "_configure_logging", lambda: None)  # keep pytest's log capture
    assert cli.main(["simulate", "--seeds", "3", "--start", "3"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("seed 4: settled: 1 deliveries left unsettled (and 1 more); "
                        "replay: PYTHONHASHSEED=0 reference simulate --seed 4")
    assert lines[-1].startswith("3 seeds, 2 violations")


def test_a_port_in_use_is_one_line() -> None:
    """`serve` on a port another process listens on exits 1 with one line, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli("serve", "--port", str(port))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [f"reference: error: cannot listen on 127.0.0.1:{port}: "
                     "Address already in use"]


def test_completion_help_lists_the_modes() -> None:
    """`serve --help` names every completion mode, and an unknown one is refused."""
    assert "poll, batch, push or reply" in " ".join(run_cli("serve", "--help").stdout.split())
    done = run_cli("serve", "--completion", "carrier-pigeon")
    assert done.returncode == 2 and "invalid choice" in done.stderr
