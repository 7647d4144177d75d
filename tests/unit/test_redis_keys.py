"""The Redis key names (adapters/redis_keys.py): one naming for every store and core, every key
of one request in its record's hash slot, the users domain in one slot, and braces refused."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
from redis.crc import key_slot

from reference.adapters.redis_keys import (
    USERS_NAMESPACE,
    RequestKeys,
    checked_prefix,
    users_namespace,
)
from reference.adapters.redis_results import RedisResultStore
from reference.adapters.redis_users import RedisUserRepository
from reference.bootstrap import build
from reference.conformance.core import check_key_layout
from reference.conformance.report import CheckFailed
from reference.errors import ConfigError
from reference.records import RUNNING, SUCCESS, ResultRecord
from reference.settings import Settings
from tests.unit.test_cli import run_cli


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_the_key_names_of_one_request() -> None:
    """The record is `<prefix><id>`; its companions carry the record's key as hash tag."""
    bare, prefixed = RequestKeys(), RequestKeys("p:")
    assert [bare.record("r"), bare.final("r"), bare.claim("r"), bare.starts("r")] == \
        ["r", "final:{r}", "claim:{r}", "starts:{r}"]
    assert [prefixed.record("r"), prefixed.final("r"), prefixed.claim("r"),
            prefixed.starts("r")] == ["p:r", "p:final:{p:r}", "p:claim:{p:r}", "p:starts:{p:r}"]
    assert (prefixed.finals_channel, prefixed.updates_channel) == \
        ("p:reference:finals", "p:reference:updates")
    assert users_namespace() == USERS_NAMESPACE == "{reference:users}:"
    assert users_namespace("p:") == "p:{reference:users}:"


@pytest.mark.parametrize("prefix", ["", "p:", "tenant-7.", "conformance:0a1b2c:"])
def test_every_key_of_a_request_hashes_to_its_records_slot(prefix: str) -> None:
    """For any prefix and request id, marker, claim and start count share the record's slot
    (and the record's slot is that of its whole key: it holds no hash tag)."""
    keys = RequestKeys(prefix)
    for _ in range(200):
        rid = str(uuid.uuid4())
        record_slot = slot(keys.record(rid))
        assert record_slot == slot(prefix + rid)
        assert {slot(keys.final(rid)), slot(keys.claim(rid)), slot(keys.starts(rid))} == \
            {record_slot}


def test_the_users_domain_is_one_slot() -> None:
    """Every users key (next_id, ids, a user hash, an email, a req: key) hashes to one slot."""
    ns = users_namespace("p:")
    names = [ns + "next_id", ns + "ids", ns + "u:42", ns + "email:a@example.com",
             ns + "req:" + str(uuid.uuid4())]
    assert {slot(n) for n in names} == {slot("reference:users")}


async def test_the_stores_write_the_contract_names() -> None:
    """BEGIN then FINISH through RedisResultStore, and a createUser, leave exactly the keys
    that contract §5 names."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    store = RedisResultStore(client, key_prefix="p:")
    users = RedisUserRepository(client, namespace=users_namespace("p:"))
    assert await store.begin("r", "w", ResultRecord(status=RUNNING, detail=""),
                             claim_ttl_s=5, running_ttl_s=60) == "started"
    claim = await client.get("p:claim:{p:r}")
    assert await store.finish("r", "w", ResultRecord(status=SUCCESS, detail=""),
                              ttl_s=60) is True
    await users.create("A", "a@example.com", request_id="r")
    keys = {k.decode() for k in await client.keys("*")}
    assert claim == b"w"
    assert keys == {"p:r", "p:final:{p:r}", "p:starts:{p:r}", "p:{reference:users}:next_id",
                    "p:{reference:users}:ids", "p:{reference:users}:u:1",
                    "p:{reference:users}:email:a@example.com", "p:{reference:users}:req:r"}
    await client.aclose()


@pytest.mark.parametrize("prefix", ["{t}:", "a}", "x{"])
def test_a_braced_prefix_is_refused(prefix: str) -> None:
    """A prefix with '{' or '}' is a ConfigError, in one line that names the variable."""
    with pytest.raises(ConfigError) as refused:
        checked_prefix(prefix)
    assert "REFERENCE_KEY_PREFIX" in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(ConfigError):
        RequestKeys(prefix)
    with pytest.raises(ConfigError):
        users_namespace(prefix)


@pytest.mark.parametrize("store_url", ["memory://", "redis://127.0.0.1:1/0", "rediss://h:1/0",
                                       "redis+cluster://127.0.0.1:1,127.0.0.1:2",
                                       "rediss+cluster://h1:1,h2:2"])
def test_every_store_refuses_a_braced_prefix_when_built(store_url: str) -> None:
    """Settings refuse a braced key prefix, before any store is built, whatever the scheme;
    build() refuses it too when the settings were made without their checks."""
    broker = "memory://" if store_url == "memory://" else "amqp://127.0.0.1:1/"
    with pytest.raises(ConfigError, match="must not contain"):
        Settings(broker_url=broker, store_url=store_url, key_prefix="app{1}:")
    settings = Settings(broker_url=broker, store_url=store_url)
    object.__setattr__(settings, "key_prefix", "app{1}:")  # past the settings' own check
    with pytest.raises(ConfigError, match="must not contain"):
        build(settings, require_key=False)


def test_a_worker_with_a_braced_prefix_stops_in_one_line() -> None:
    """`reference worker` with REFERENCE_KEY_PREFIX='a{b}:' exits 2 with one error line."""
    done = run_cli("worker", env={"REFERENCE_BROKER_URL": "amqp://127.0.0.1:1/",
                                  "REFERENCE_STORE_URL": "redis+cluster://127.0.0.1:1",
                                  "REFERENCE_KEY_PREFIX": "a{b}:"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "reference: error: REFERENCE_KEY_PREFIX='a{b}:' must not contain '{' or '}': braces "
        "mark a Redis Cluster hash tag in the keys built from it"]


# --- the conformance kit's check of the layout ------------------------------------------------


def _run(client: Any, rid: str) -> Any:
    """What check_key_layout reads of a conformance run."""
    return SimpleNamespace(redis=client, prefix="c:", actions_of={rid: "createUser"},
                           finals={}, notes=[],
                           options=SimpleNamespace(domain_namespace=USERS_NAMESPACE))


async def test_the_conformance_layout_check_passes_the_contract_names() -> None:
    """keys.layout passes a run whose keys are the contract's."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    rid = str(uuid.uuid4())
    for key in (f"c:{rid}", f"c:final:{{c:{rid}}}", f"c:starts:{{c:{rid}}}",
                f"c:{{reference:users}}:req:{rid}", "c:{reference:users}:next_id"):
        await client.set(key, "1")
    run = _run(client, rid)
    await check_key_layout(run)
    assert run.notes == ["keys.layout: 5 keys, 1 finality markers"]
    await client.aclose()


@pytest.mark.parametrize("flat", ["c:final:{rid}", "c:claim:{rid}x", "c:starts:{{c:{rid}}}:x",
                                  "c:reference:users:req:{rid}"])
async def test_the_conformance_layout_check_fails_other_names(flat: str) -> None:
    """keys.layout fails a core that names a request's key otherwise (the flat names of
    before, or any other), so it would not share a slot with its record."""
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    rid = str(uuid.uuid4())
    await client.set(f"c:{rid}", "1")
    await client.set(flat.format(rid=rid), "1")
    with pytest.raises(CheckFailed, match="not named as contract §5 says"):
        await check_key_layout(_run(client, rid))
    await client.aclose()
