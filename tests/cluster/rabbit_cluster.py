"""A throwaway 3-node RabbitMQ cluster on loopback, started and stopped by the test.

Nodes `rc1@localhost` .. `rc3@localhost` listen for AMQP on 127.0.0.1:5701-5703 and for Erlang
distribution on 25701-25703; they register with an epmd of their own on port 4371 (never the
machine's epmd on 4369, nor its node on 5672). Everything lives in `workdir`: the Erlang cookie
(in a HOME of its own), each node's config, data, logs and PID file. The cluster forms at boot
through `classic_config` peer discovery.

The scripts are called from /usr/lib/rabbitmq/bin: the /usr/sbin wrappers switch to the
rabbitmq user and its cookie. Only the processes started here are ever signalled: each node's
process group (a session of its own: the start script, the Erlang VM and its helpers) and the
epmd started here, by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.helpers import accepts

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT_S = 90.0
CTL_TIMEOUT_S = 30.0


class ClusterStartError(RuntimeError):
    """The cluster did not start; the message carries the failing node's log tail."""


def _tail(path: Path, chars: int = 3000) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    return path.read_text(errors="replace")[-chars:]


@dataclass
class RabbitNode:
    index: int
    name: str
    port: int
    dist_port: int
    directory: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.directory / "stdout.log"

    @property
    def log(self) -> Path:
        return self.directory / "log" / f"{self.name}.log"

    @property
    def pid_file(self) -> Path:
        return self.directory / "node.pid"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def beam_pid(self) -> int:
        """The Erlang VM's PID, from the PID file the node writes, checked to be a child of
        the start script we launched (so that nothing else is ever signalled)."""
        assert self.popen is not None
        pid = int(self.pid_file.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
        ppid = int(stat.rpartition(")")[2].split()[1])
        if pid != self.popen.pid and ppid != self.popen.pid:
            raise RuntimeError(f"{self.name}: PID {pid} is not a process this harness started")
        return pid

    def log_tail(self) -> str:
        return (f"--- {self.name} stdout ({self.out}) ---\n{_tail(self.out)}\n"
                f"--- {self.name} log ({self.log}) ---\n{_tail(self.log)}")


class LocalRabbitCluster:
    """Three RabbitMQ nodes clustered at boot, for failover tests; a context manager."""

    def __init__(self, workdir: Path, *, base_port: int = 5701, dist_base_port: int = 25701,
                 epmd_port: int = 4371, size: int = 3) -> None:
        self.workdir = workdir
        self.epmd_port = epmd_port
        self.home = workdir / "home"
        self.nodes = [
            RabbitNode(i, f"rc{i}@localhost", base_port + i - 1, dist_base_port + i - 1,
                       workdir / f"rc{i}", {})
            for i in range(1, size + 1)
        ]
        self._epmd: subprocess.Popen[bytes] | None = None
        self.started_in_s: float | None = None

    # --- life ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The multi-host AMQP URL of every node, in order."""
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    def node_url(self, node: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.node(node).port}/"

    def node(self, node: int) -> RabbitNode:
        return self.nodes[node - 1]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LocalRabbitCluster:
        """Start epmd and the nodes, and wait (bounded) until every node runs in one cluster;
        on failure stop what was started and raise ClusterStartError with the log tails."""
        began = time.monotonic()
        script = RABBITMQ_BIN / "rabbitmq-server"
        if not script.exists() or shutil.which("epmd") is None:
            raise FileNotFoundError(f"RabbitMQ is not installed ({script}, epmd)")
        for node in self.nodes:
            if accepts(node.port) or accepts(node.dist_port):
                raise ClusterStartError(f"port {node.port} or {node.dist_port} is already in "
                                        f"use: another cluster (or a leftover) holds it")
        try:
            self._write_files()
            self._start_epmd()
            for node in self.nodes:
                with node.out.open("wb") as out:
                    # A session of its own: the start script, the VM and its helpers are one
                    # process group, which is what stop() signals (and nothing else).
                    node.popen = subprocess.Popen([str(script)], env=node.env, stdout=out,
                                                  stderr=subprocess.STDOUT, cwd=node.directory,
                                                  stdin=subprocess.DEVNULL,
                                                  start_new_session=True)
            self._wait_formed(began + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - began
        return self

    def _write_files(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if cookie.exists():
            cookie.chmod(0o600)
        cookie.write_text(secrets.token_hex(16).upper())
        cookie.chmod(0o400)
        plugins = self.workdir / "enabled_plugins"
        plugins.write_text("[].\n")  # no management plugin
        env_file = self.workdir / "rabbitmq-env.conf"
        env_file.write_text("")  # not /etc/rabbitmq/rabbitmq-env.conf's node name and flags
        peers = "".join(f"cluster_formation.classic_config.nodes.{n.index} = {n.name}\n"
                        for n in self.nodes)
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            conf = node.directory / "rabbitmq.conf"
            conf.write_text(
                f"listeners.tcp.default = 127.0.0.1:{node.port}\n"
                "cluster_formation.peer_discovery_backend = classic_config\n"
                f"{peers}"
                "cluster_formation.discovery_retry_interval = 500\n"
                "cluster_formation.discovery_retry_limit = 4\n"
            )
            node.env = {
                **self._base_env(),
                "RABBITMQ_CONF_ENV_FILE": str(env_file),
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_CONFIG_FILE": str(conf),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.directory / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
                "RABBITMQ_MNESIA_BASE": str(node.directory / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.directory / "log"),
                "RABBITMQ_PID_FILE": str(node.pid_file),
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                    "-kernel inet_dist_use_interface {127,0,0,1}",
            }

    def _base_env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin",
            "HOME": str(self.home),  # the cookie of this cluster
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
        }

    def _start_epmd(self) -> None:
        if accepts(self.epmd_port):
            # Not ours: use it, never stop it. Our node names must still be free there.
            names = subprocess.run(["epmd", "-port", str(self.epmd_port), "-names"],
                                   capture_output=True, text=True, timeout=10).stdout
            taken = [n.name for n in self.nodes if f"name {n.name.split('@')[0]} " in names]
            if taken:
                raise ClusterStartError(f"epmd on {self.epmd_port} already has {taken}")
            return
        with (self.workdir / "epmd.log").open("wb") as out:
            self._epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + 10
        while not accepts(self.epmd_port):
            if self._epmd.poll() is not None or time.monotonic() > deadline:
                raise ClusterStartError(
                    f"epmd did not start on {self.epmd_port}:\n"
                    f"{_tail(self.workdir / 'epmd.log')}")
            time.sleep(0.05)

    def _wait_formed(self, deadline: float) -> None:
        waiting = list(self.nodes)
        while waiting:
            for node in list(waiting):
                assert node.popen is not None
                if node.popen.poll() is not None:
                    raise ClusterStartError(
                        f"RabbitMQ node {node.name} exited with {node.popen.returncode} while "
                        f"starting:\n{node.log_tail()}")
                if "completed with" in _tail(node.out, 20000) and accepts(node.port):
                    waiting.remove(node)
            if waiting and time.monotonic() > deadline:
                raise ClusterStartError(
                    f"RabbitMQ node(s) {[n.name for n in waiting]} did not start in time:\n"
                    + "\n".join(n.log_tail() for n in waiting))
            time.sleep(0.2)
        expected = sorted(n.name for n in self.nodes)
        while True:
            running: list[str] = []
            with contextlib.suppress(subprocess.SubprocessError, ValueError, KeyError):
                status = json.loads(self.ctl(1, "cluster_status", "--formatter", "json"))
                running = sorted(status["running_nodes"])
            if running == expected:
                return
            if time.monotonic() > deadline:
                raise ClusterStartError(
                    f"the nodes did not form one cluster in time (running: {running}):\n"
                    + "\n".join(n.log_tail() for n in self.nodes))
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGKILL each node's VM, then what is left of its own process group, then the epmd
        started here (by PID).

        The data is thrown away with `workdir`, so nothing is gained by a clean shutdown,
        which takes several seconds per node. The VM goes first so that the start script,
        which waits for it, reaps it (killed together, the VM would be left to init)."""
        for node in self.nodes:
            if node.alive():
                with contextlib.suppress(OSError, ValueError, RuntimeError):
                    os.kill(node.beam_pid(), signal.SIGKILL)
        for node in self.nodes:
            if node.popen is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.popen.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.popen.pid, signal.SIGKILL)  # its helpers; the script if stuck
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.popen.wait(timeout=5)
        if self._epmd is not None and self._epmd.poll() is None:
            self._epmd.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._epmd.wait(timeout=5)

    def __enter__(self) -> LocalRabbitCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- faults and questions ------------------------------------------------------------

    def kill(self, node: int) -> float:
        """SIGKILL node `node`'s Erlang VM (by the PID it wrote, a child of our script);
        returns the epoch time of the kill."""
        target = self.node(node)
        pid = target.beam_pid()
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        assert target.popen is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            target.popen.wait(timeout=10)
        return killed_at

    def live_nodes(self) -> list[int]:
        return [n.index for n in self.nodes if n.alive()]

    def ctl(self, node: int, *args: str, timeout_s: float = CTL_TIMEOUT_S) -> str:
        """`rabbitmqctl -n <node> ...` with this cluster's cookie and epmd; its stdout."""
        target = self.node(node)
        done = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", target.name, *args],
            env=target.env or self._base_env(), capture_output=True, text=True,
            timeout=timeout_s)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout,
                                                done.stderr)
        return done.stdout

    def queue_info(self, queue: str) -> dict[str, Any] | None:
        """`list_queues name type leader members online messages` of `queue`, asked of a live
        node; None while no live node answers or the queue does not exist."""
        for index in self.live_nodes():
            try:
                out = self.ctl(index, "list_queues", "name", "type", "leader", "members",
                               "online", "messages", "--formatter", "json")
            except (subprocess.SubprocessError, OSError):
                continue
            for row in json.loads(out or "[]"):
                if row.get("name") == queue:
                    return dict(row)
            return None
        return None

    def leader(self, queue: str) -> int | None:
        """The index (1-based) of the node that leads quorum queue `queue`, or None."""
        return self.leader_of(self.queue_info(queue))

    def leader_of(self, info: dict[str, Any] | None) -> int | None:
        """The index of the node named as leader in a `queue_info` answer, or None."""
        name = info.get("leader") if info else None
        for node in self.nodes:
            if node.name == name:
                return node.index
        return None

    def wait_leader(self, queue: str, *, not_on: int | None = None,
                    timeout_s: float = 30.0) -> int:
        """Wait (bounded) for `queue` to have a leader on a live node other than `not_on`."""
        deadline = time.monotonic() + timeout_s
        last: int | None = None
        while time.monotonic() < deadline:
            last = self.leader(queue)
            if last is not None and last != not_on and self.node(last).alive():
                return last
            time.sleep(0.2)
        raise AssertionError(f"queue {queue}: no leader off node {not_on} within "
                             f"{timeout_s:g} s (last: {last})")

    def elected_at(self, queue: str, node: int, after: float) -> float | None:
        """When (epoch seconds) node `node` became the leader of `queue` after the epoch time
        `after`, from the node's log ("candidate -> leader"); None if it has not."""
        mark = f"queue '{queue}' in vhost '/': candidate -> leader"
        log = self.node(node).log
        if not log.exists():
            return None
        for line in log.read_text(errors="replace").splitlines():
            if mark in line:
                stamp = datetime.fromisoformat(line[:32].replace(" ", "T")).timestamp()
                if stamp > after:
                    return stamp
        return None

    def connected_nodes(self, pids: list[int]) -> dict[int, int]:
        """For the processes `pids` (and their descendants): node index -> number of their
        established TCP connections to that node's AMQP port, read from /proc."""
        ports = {n.port: n.index for n in self.nodes}
        inodes: set[str] = set()
        for pid in _with_descendants(pids):
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd)
                        if target.startswith("socket:["):
                            inodes.add(target[8:-1])
        counts: dict[int, int] = {}
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    cols = line.split()
                    remote_port = int(cols[2].rpartition(":")[2], 16)
                    if cols[3] == "01" and remote_port in ports and cols[9] in inodes:
                        index = ports[remote_port]
                        counts[index] = counts.get(index, 0) + 1
        return counts


def _with_descendants(pids: list[int]) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found
