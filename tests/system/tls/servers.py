"""Throwaway TLS servers on loopback, started and stopped by the test (by their own PIDs).

- `redis_tls`: a `redis-server` with only a `tls-port` (no plain port), no persistence.
- `rabbitmq_tls`: a second RabbitMQ node of its own (node name, distribution port, data and
  log directories, config, cookie, no plugins) with only a TLS listener. It shares the
  machine's epmd and starts in about 5 s; the machine's own node on 5672 is left alone.

Both skip (fail under CI=true, like every `real` test) when the server is not installed or
cannot start with TLS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.helpers import accepts

START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _stop(popen: subprocess.Popen[bytes], *, group: bool) -> None:
    """SIGTERM to the process we started (and, for a process group we created with it, to
    its children), then SIGKILL if it has not ended within 15 s."""
    if popen.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, sig)
        else:
            popen.send_signal(sig)
        try:
            popen.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class TlsServer:
    port: int
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def redis_tls(directory: Path, *, cert: Path, key: Path, ca: Path,
              require_client_cert: bool = True) -> Iterator[TlsServer]:
    """A redis-server on a free loopback TLS port with `cert`/`key`; clients must present a
    certificate signed by `ca` when `require_client_cert`."""
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("redis-server is not installed")
    assert binary is not None
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = TlsServer(port, directory / "redis.log")
    args = [binary, "--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port),
            "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "yes" if require_client_cert else "no",
            "--save", "", "--appendonly", "no", "--dir", str(directory),
            "--logfile", str(server.log)]
    with (directory / "redis.out").open("wb") as out:
        popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ready to accept connections" not in server.text():
            if popen.poll() is not None or time.monotonic() > deadline:
                _unavailable(f"redis-server did not start with TLS:\n{server.text()[-2000:]}"
                             f"{(directory / 'redis.out').read_text(errors='replace')}")
            time.sleep(0.02)
        yield server
    finally:
        _stop(popen, group=False)


def _rabbitmq_script() -> Path | None:
    """The real start script (the one in /usr/sbin is a wrapper that switches to the
    rabbitmq user, who could not read the test's key files)."""
    found = shutil.which("rabbitmq-server") or shutil.which("rabbitmq-server", path="/usr/sbin")
    if found is None:
        return None
    script = Path(os.path.realpath(found)).parent / "rabbitmq-server"
    return script if script.exists() else None


@contextlib.contextmanager
def rabbitmq_tls(directory: Path, *, cert: Path, key: Path, ca: Path) -> Iterator[TlsServer]:
    """A RabbitMQ node of its own with one TLS listener on a free loopback port; clients must
    present a certificate signed by `ca`. guest/guest works (from loopback)."""
    script = _rabbitmq_script()
    if script is None:
        _unavailable("rabbitmq-server is not installed")
    assert script is not None
    directory.mkdir(parents=True, exist_ok=True)
    port, dist_port = free_port(), free_port()
    node = f"reftls{uuid.uuid4().hex[:8]}@localhost"
    conf = directory / "rabbitmq.conf"
    conf.write_text(
        "listeners.tcp = none\n"
        f"listeners.ssl.default = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {ca}\n"
        f"ssl_options.certfile = {cert}\n"
        f"ssl_options.keyfile = {key}\n"
        "ssl_options.verify = verify_peer\n"
        "ssl_options.fail_if_no_peer_cert = true\n"
    )
    (directory / "enabled_plugins").write_text("[].\n")
    (directory / "env.conf").write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf's node name
    (directory / "home").mkdir(exist_ok=True)  # a cookie of its own
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin",
        "HOME": str(directory / "home"),
        "LANG": "C.UTF-8",
        "RABBITMQ_CONF_ENV_FILE": str(directory / "env.conf"),
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_CONFIG_FILE": str(conf),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_PID_FILE": str(directory / "node.pid"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "ERL_EPMD_ADDRESS": "127.0.0.1",
    }
    server = TlsServer(port, directory / "rabbitmq.out")
    with server.log.open("wb") as out:
        # A session of its own: the script, the Erlang VM and its helpers are one group,
        # which is what we stop (and nothing else).
        popen = subprocess.Popen([str(script)], env=env, stdout=out,
                                 stderr=subprocess.STDOUT, cwd=directory,
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        # The banner's last line, "Starting broker... completed with 0 plugins."
        while "completed with" not in server.text() or not accepts(port):
            if popen.poll() is not None or time.monotonic() > deadline:
                _unavailable(f"a RabbitMQ node with a TLS listener did not start within "
                             f"{START_TIMEOUT_S:g} s:\n{server.text()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        _stop(popen, group=True)
