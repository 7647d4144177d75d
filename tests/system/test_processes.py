"""The product as separate processes on real RabbitMQ and Redis: API, workers, faults."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.system.conftest import RealBrokers
from tests.system.stack import SECRET, Stack, stack_env

pytestmark = pytest.mark.real


def auth(sub: str = "alice") -> dict[str, str]:
    token = jwt.encode({"sub": sub, "exp": int(time.time()) + 600, "roles": ["users:write"]},
                       SECRET, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def stack(real: RealBrokers, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, stack_env(real.amqp_via_proxy, real.redis_via_proxy, real.queue,
                                  real.key_prefix))
    yield s
    s.stop()


def wait_all_final(http: httpx.Client, ids: list[str], timeout: float = 40) -> dict[str, Any]:
    records: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    while len(records) < len(ids):
        for rid in ids:
            if rid in records:
                continue
            r = http.get(f"/requests/{rid}", headers=auth())
            if r.status_code == 200 and r.json()["status"] in {"Success", "Fail"}:
                records[rid] = r.json()
        if time.monotonic() > deadline:
            missing = [rid for rid in ids if rid not in records]
            raise AssertionError(f"{len(missing)} of {len(ids)} requests never finished")
        time.sleep(0.1)
    return records


def submit_async(http: httpx.Client, path: str, body: dict[str, Any]) -> str:
    r = http.post(path, json=body, headers={**auth(), "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    return str(r.json()["request_id"])


def test_crud_across_processes(stack: Stack) -> None:
    """Two API processes and two workers serve the whole user lifecycle."""
    stack.serve(workers=2)
    stack.worker("w1")
    stack.worker("w2")
    with httpx.Client(base_url=stack.base_url, timeout=20) as http:
        created = http.post("/users", json={"name": "Hong", "email": "hong@x.example"},
                            headers=auth())
        assert created.status_code == 201, created.text
        uid = created.json()["id"]
        assert http.get(f"/users/{uid}", headers=auth()).json()["name"] == "Hong"
        assert http.put(f"/users/{uid}", json={"name": "Gildong"},
                        headers=auth()).json()["name"] == "Gildong"
        assert http.get("/users", headers=auth()).json()["items"][0]["id"] == uid
        assert http.delete(f"/users/{uid}", headers=auth()).status_code == 204
        assert http.get(f"/users/{uid}", headers=auth()).status_code == 404


def test_sigkill_of_a_worker_mid_jobs_loses_nothing(stack: Stack) -> None:
    """SIGKILL one of two workers while it runs long jobs: every request still ends in
    Success, none is finished twice, and each createUser made exactly one user."""
    stack.serve()
    victim = stack.worker("victim", concurrency=8)
    stack.worker("survivor", concurrency=8)
    with httpx.Client(base_url=stack.base_url, timeout=20) as http:
        jobs = [submit_async(http, "/jobs", {"duration_ms": 1500, "steps": 5}) for _ in range(16)]
        users = [submit_async(http, "/users", {"name": f"U{i}", "email": f"k{i}@x.example"})
                 for i in range(8)]
        time.sleep(0.7)
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait(timeout=5)
        records = wait_all_final(http, jobs + users)
        listed = http.get("/users", params={"limit": 100}, headers=auth()).json()["items"]
    statuses = {rid: rec["status"] for rid, rec in records.items()}
    assert set(statuses.values()) == {"Success"}
    finished = stack.finished_counts()
    duplicated = [rid for rid, n in finished.items() if n > 1]
    print(f"\nSIGKILL: sent={len(jobs) + len(users)} finished={len(records)} "
          f"duplicated={len(duplicated)} lost={len(jobs) + len(users) - len(records)} "
          f"victim finished {sum(1 for line in victim.text().splitlines() if 'finished' in line)}")
    assert duplicated == []
    assert sorted(u["email"] for u in listed) == sorted(f"k{i}@x.example" for i in range(8))
    assert len({records[rid]["result"]["id"] for rid in users}) == 8


@pytest.mark.parametrize("which", ["rabbitmq", "redis"])
def test_connection_cut_and_restored_across_processes(
    stack: Stack, real: RealBrokers, which: str
) -> None:
    """Cut the broker's (or Redis') connections under a running stack: new requests get 503
    and /readyz 503 meanwhile, every request already confirmed still ends in Success exactly
    once, and new requests work again after the restore, with no restart."""
    proxy = real.amqp_proxy if which == "rabbitmq" else real.redis_proxy
    stack.serve()
    stack.worker("w1", concurrency=8)
    with httpx.Client(base_url=stack.base_url, timeout=20) as http:
        jobs = [submit_async(http, "/jobs", {"duration_ms": 1000, "steps": 4}) for _ in range(8)]
        time.sleep(0.3)
        proxy.cut()
        refused = http.post("/jobs", json={"duration_ms": 0}, headers=auth())
        ready = http.get("/readyz")
        time.sleep(1.0)
        proxy.restore()
        records = wait_all_final(http, jobs)
        deadline = time.monotonic() + 30
        while http.post("/jobs", json={"duration_ms": 0}, headers=auth()).status_code != 200:
            assert time.monotonic() < deadline, f"API did not recover after {which} came back"
            time.sleep(0.2)
    assert refused.status_code == 503
    assert ready.status_code == 503
    assert {r["status"] for r in records.values()} == {"Success"}
    finished = stack.finished_counts()
    print(f"\n{which} cut: sent={len(jobs)} finished={len(records)} "
          f"duplicated={sum(1 for n in finished.values() if n > 1)}")
    assert all(finished[rid] == 1 for rid in jobs)


def test_sigterm_lets_in_flight_work_finish(stack: Stack) -> None:
    """SIGTERM to a worker with a job in flight: the job ends in Success and the worker
    exits 0 within its shutdown bound."""
    stack.serve()
    worker = stack.worker("w1")
    with httpx.Client(base_url=stack.base_url, timeout=20) as http:
        rid = submit_async(http, "/jobs", {"duration_ms": 1500, "steps": 3})
        deadline = time.monotonic() + 10
        while http.get(f"/requests/{rid}", headers=auth()).json()["status"] != "Running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(timeout=10) == 0
        took = time.monotonic() - started
        record = http.get(f"/requests/{rid}", headers=auth()).json()
    assert record["status"] == "Success"
    assert took < 5 + 1
    assert "worker stopped after 1 requests" in worker.text()
