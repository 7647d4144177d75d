"""A throwaway local Redis Cluster for tests: 3 primaries and 3 replicas, `redis-server` in PATH.

The nodes listen on 127.0.0.1, ports `base_port .. base_port + 5` (their cluster bus ports
10000 above), keep nothing on disk (`--save "" --appendonly no`) and live in a fresh directory
under `workdir` that `stop()` removes. Only the processes started here are ever signalled, by
their PIDs. Every method blocks; from async code call the slow ones (`kill`, `wait_promoted`)
through `asyncio.to_thread`.

    with LocalRedisCluster(7201, tmp_path) as cluster:
        url = cluster.url  # redis+cluster://127.0.0.1:7201,...
        primary = cluster.primary_for_key("some-key")
        cluster.kill(primary)
        cluster.wait_promoted(primary)  # its replica is the primary now, cluster_state:ok
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis
from redis.crc import key_slot

NODES = 6
REPLICAS_PER_PRIMARY = 1
NODE_TIMEOUT_MS = 2000
START_TIMEOUT_S = 30.0
BUS_PORT_OFFSET = 10000
RESERVED_PORTS = frozenset({6379, 5672})  # the machine's own Redis and RabbitMQ: never touched


class ClusterError(RuntimeError):
    """The local cluster did not come up, or did not reach the state waited for, in time."""


class LocalRedisCluster:
    """Six `redis-server` processes made into one cluster; a context manager."""

    def __init__(self, base_port: int, workdir: Path) -> None:
        self.ports = [base_port + i for i in range(NODES)]
        taken = RESERVED_PORTS & {p + off for p in self.ports for off in (0, BUS_PORT_OFFSET)}
        if taken:
            raise ValueError(f"base port {base_port} would use reserved ports {sorted(taken)}")
        self.workdir = Path(workdir).resolve()
        self.dir: Path | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._replica_of: dict[int, int] = {}  # replica port -> its primary's port, at start

    # --- life ---------------------------------------------------------------------------------

    def start(self) -> LocalRedisCluster:
        """Start the six nodes, create the cluster, and wait until it is whole and replicated."""
        busy = [p for p in self.ports for q in (p, p + BUS_PORT_OFFSET) if _listening(q)]
        if busy:
            raise ClusterError(f"ports already in use: {sorted(set(busy))}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-cluster-{self.ports[0]}-",
                                         dir=self.workdir))
        try:
            for port in self.ports:
                self._spawn(port)
            self._wait(lambda: all(self._ping(p) for p in self.ports), "every node answers PING")
            create = subprocess.run(
                ["redis-cli", "--cluster", "create",
                 *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", str(REPLICAS_PER_PRIMARY), "--cluster-yes"],
                capture_output=True, timeout=START_TIMEOUT_S, check=False)
            if create.returncode != 0:
                raise ClusterError("redis-cli --cluster create failed: "
                                   + create.stdout.decode(errors="replace")[-2000:]
                                   + create.stderr.decode(errors="replace")[-2000:])
            self._wait(self._whole, "cluster_state:ok on every node, every replica linked")
            self._replica_of = {p: self._master_port(p) for p in self.ports
                                if self._role(p) == "slave"}
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill the nodes started here (by PID) and remove the directory."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._procs.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- what tests use -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def alive(self, port: int) -> bool:
        proc = self._procs.get(port)
        return proc is not None and proc.poll() is None

    def primaries(self) -> list[int]:
        """The ports of the live nodes that are primaries now."""
        return [p for p in self.ports if self.alive(p) and self._role(p) == "master"]

    def replica_of(self, primary: int) -> int:
        """The port of the replica that `primary` had when the cluster was made."""
        for replica, master in self._replica_of.items():
            if master == primary:
                return replica
        raise KeyError(f"no replica of {primary} (primaries: {self.primaries()})")

    def primary_for_key(self, key: str) -> int:
        """The port of the live primary that serves `key`'s hash slot now, as the cluster says."""
        slot = key_slot(key.encode())
        for port in self.ports:
            if not self.alive(port):
                continue
            for start, end, primary, *_ in self._client(port).execute_command("CLUSTER SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        raise ClusterError(f"no live node knows who serves slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port` (one started here) and reap it."""
        proc = self._procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self, port: int, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the killed node on `port` again (with its cluster config file: it rejoins, as
        a replica of whoever took its place) and wait until the cluster is whole again."""
        if self.alive(port):
            raise ClusterError(f"node {port} is running")
        self._spawn(port)
        self._wait(self._whole, f"{port} back, cluster_state:ok everywhere, replicas linked",
                   timeout_s)
        self._replica_of = {p: self._master_port(p) for p in self.ports
                            if self._role(p) == "slave"}

    def wait_promoted(self, old_port: int, timeout_s: float = 30) -> int:
        """Wait until the replica of the (killed) primary `old_port` is a primary and every live
        node says cluster_state:ok; the new primary's port."""
        replica = self.replica_of(old_port)

        def promoted() -> bool:
            return self._role(replica) == "master" and all(
                self._state(p) == "ok" for p in self.ports if self.alive(p))

        self._wait(promoted, f"{replica} promoted in place of {old_port}", timeout_s)
        return replica

    # --- inside -------------------------------------------------------------------------------

    def _spawn(self, port: int) -> None:
        assert self.dir is not None
        data = self.dir / str(port)
        data.mkdir(exist_ok=True)
        log = (self.dir / f"{port}.log").open("ab")
        with log:
            self._procs[port] = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes",
                 "--cluster-config-file", str(self.dir / f"nodes-{port}.conf"),
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                 "--repl-diskless-sync-delay", "0",
                 # A replica is shown to clients (CLUSTER SLOTS) once its replication offset
                 # moved: with the default 10 s that is 10 s after the cluster was made.
                 "--repl-ping-replica-period", "1",
                 "--save", "", "--appendonly", "no", "--dir", str(data),
                 "--daemonize", "no", "--protected-mode", "no"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        (self.dir / f"{port}.pid").write_text(str(self._procs[port].pid))

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2,
                           socket_connect_timeout=2, decode_responses=True)

    def _query(self, port: int, *command: str) -> str:
        """A command's text reply, or '' when the node does not answer."""
        if not self.alive(port):
            return ""
        client = self._client(port)
        try:
            return str(client.execute_command(*command))
        except (redis.RedisError, OSError):
            return ""
        finally:
            client.close()

    def _ping(self, port: int) -> bool:
        return self._query(port, "ECHO", "up") == "up"

    def _info(self, port: int, section: str) -> dict[str, str]:
        if not self.alive(port):
            return {}
        client = self._client(port)
        try:
            return {k: str(v) for k, v in client.info(section).items()}
        except (redis.RedisError, OSError):
            return {}
        finally:
            client.close()

    def _role(self, port: int) -> str:
        return self._info(port, "replication").get("role", "")

    def _master_port(self, port: int) -> int:
        return int(self._info(port, "replication").get("master_port", "0"))

    def _state(self, port: int) -> str:
        for line in self._query(port, "CLUSTER", "INFO").splitlines():
            if line.startswith("cluster_state:"):
                return line.split(":", 1)[1].strip()
        return ""

    def _whole(self) -> bool:
        """Every node: cluster_state:ok, knows the 6 nodes as 3 primaries and 3 replicas, and
        shows clients all 6 (CLUSTER SLOTS); every replica: its link to its primary is up."""
        for port in self.ports:
            if self._state(port) != "ok" or len(self._slot_nodes(port)) != NODES:
                return False
            nodes = [line.split() for line in
                     self._query(port, "CLUSTER", "NODES").splitlines() if line.strip()]
            flags = [n[2] for n in nodes if len(n) > 2]
            if (len(flags) != NODES or sum("master" in f for f in flags) != NODES // 2
                    or any("fail" in f or "handshake" in f for f in flags)):
                return False
            replication = self._info(port, "replication")
            if (replication.get("role") == "slave"
                    and replication.get("master_link_status") != "up"):
                return False
        return True

    def _slot_nodes(self, port: int) -> set[int]:
        """The ports of the nodes that `port` shows clients in CLUSTER SLOTS."""
        if not self.alive(port):
            return set()
        client = self._client(port)
        try:
            return {int(node[1]) for entry in client.execute_command("CLUSTER SLOTS")
                    for node in entry[2:]}
        except (redis.RedisError, OSError):
            return set()
        finally:
            client.close()

    def _wait(self, ready: Callable[[], bool], what: str,
              timeout_s: float = START_TIMEOUT_S) -> None:
        end = time.monotonic() + timeout_s
        while not ready():
            if time.monotonic() > end:
                raise ClusterError(f"not reached within {timeout_s:g} s: {what}")
            time.sleep(0.05)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0
