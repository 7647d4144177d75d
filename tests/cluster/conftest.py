"""Session-wide local clusters for the failover tests (`tox -e cluster`, marker `cluster`).

Each cluster is started here, on ports and in directories of its own, and stopped at the end
of the session: a Redis Cluster of 3 primaries and 3 replicas on 7101-7106, and a 3-node
RabbitMQ cluster on 5701-5703 (epmd on 4371). The machine's own Redis (6379) and RabbitMQ
(5672) are never touched. A missing tool or a cluster that does not start is a skip with the
reason, and a failure under CI=true.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.cluster.rabbit_cluster import RABBITMQ_BIN, LocalRabbitCluster
from tests.cluster.redis_cluster import LocalRedisCluster
from tests.conftest import IN_CI

REDIS_BASE_PORT = 7101  # 7101-7106, bus 17101-17106; the Redis Cluster's own tests use 7201+


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message} (cluster tests must run under CI=true)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """A Redis Cluster of 3 primaries and 3 replicas on 127.0.0.1:7101-7106."""
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not installed")
    cluster = LocalRedisCluster(REDIS_BASE_PORT, tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except Exception as exc:
        _unavailable(f"the local Redis Cluster did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRabbitCluster]:
    """A 3-node RabbitMQ cluster on 127.0.0.1:5701-5703."""
    if not (RABBITMQ_BIN / "rabbitmq-server").exists() or shutil.which("epmd") is None:
        _unavailable(f"RabbitMQ is not installed ({RABBITMQ_BIN}/rabbitmq-server, epmd)")
    cluster = LocalRabbitCluster(tmp_path_factory.mktemp("rabbit-cluster"))
    try:
        cluster.start()
    except Exception as exc:
        _unavailable(f"the local RabbitMQ cluster did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
