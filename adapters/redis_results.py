"""RedisResultStore: result records and work claims in Redis (real, or fakeredis in tests)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Sequence
from typing import Any, TypeAlias

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.commands.core import AsyncScript

from reference.adapters.lua_scripts import lua
from reference.adapters.redis_errors import redis_call, unavailable
from reference.adapters.redis_keys import RequestKeys
from reference.adapters.redis_pipeline import AutoPipeline
from reference.records import MalformedRecord, ResultRecord

# A final record is never overwritten. Finality is kept in a marker key beside the record
# (`<prefix>final:{<prefix><request_id>}`), set with NX in the same script that writes the final
# record, so that no write has to read the record itself to know.

SUBSCRIBE_TIMEOUT_S = 5.0

RedisClient: TypeAlias = Redis | RedisCluster  # one Redis (or fakeredis), or a Redis Cluster


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisResultStore:
    """Records under `<prefix><request_id>`; beside each, in its hash slot (adapters/redis_keys),
    its finality marker, its claim and its start count. Works on one Redis as it is; a Redis
    Cluster needs adapters/redis_cluster's subclass (MGET by slot, pub/sub on one node)."""

    def __init__(self, client: RedisClient, *, key_prefix: str = "") -> None:
        self._redis = client
        self._keys = RequestKeys(key_prefix)
        # On one Redis the commands of one loop turn share one round trip; a cluster's client
        # routes each command to its slot's node itself.
        self._pipe = AutoPipeline(client) if isinstance(client, Redis) else None
        self._finish = client.register_script(lua("finish"))
        self._progress = client.register_script(lua("progress"))
        self._begin = client.register_script(lua("begin"))
        self._renew = client.register_script(lua("renew_claim"))
        self._release = client.register_script(lua("release_claim"))

    def _key(self, request_id: str) -> str:
        return self._keys.record(request_id)

    def _marker_key(self, request_id: str) -> str:
        return self._keys.final(request_id)

    @property
    def client(self) -> RedisClient:
        return self._redis

    @property
    def finals_channel(self) -> str:
        return self._keys.finals_channel

    @property
    def updates_channel(self) -> str:
        """Where BEGIN and PROGRESS announce each Running write (the payload: request_id)."""
        return self._keys.updates_channel

    def _claim_key(self, request_id: str) -> str:
        return self._keys.claim(request_id)

    def _starts_key(self, request_id: str) -> str:
        return self._keys.starts(request_id)

    async def ping(self) -> None:
        await redis_call("PING", self._redis.ping())

    async def close(self) -> None:
        assert isinstance(self._redis, Redis)
        if self._pipe is not None:
            await self._pipe.close()
        await self._redis.aclose(close_connection_pool=True)

    def _call(self, *args: Any) -> Awaitable[Any]:
        """One command, pipelined with the others of this loop turn on one Redis."""
        if self._pipe is not None:
            return self._pipe.call(*args)
        return self._redis.execute_command(*args)

    def _run(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Awaitable[Any]:
        """One registered script, pipelined as EVALSHA on one Redis."""
        if self._pipe is not None:
            return self._pipe.script(script, keys, args)
        return script(keys=keys, args=args)

    async def create(self, request_id: str, record: ResultRecord, *, ttl_s: float) -> bool:
        """The first record of a new request; False (nothing written) if the id is taken."""
        created = await redis_call("SET NX", self._call(
            "SET", self._key(request_id), record.to_json(), "NX", "PX", _ms(ttl_s)))
        return bool(created)

    async def put(self, request_id: str, record: ResultRecord, *, ttl_s: float) -> bool:
        if record.is_final:
            return await self._write_final(request_id, record, ttl_s, holder=None)
        keys = [self._key(request_id), self._marker_key(request_id)]
        return bool(await redis_call("progress script", self._run(
            self._progress, keys,
            [record.to_json(), _ms(ttl_s), self.updates_channel, request_id])))

    async def begin(self, request_id: str, holder: str, running: ResultRecord, *,
                    claim_ttl_s: float, running_ttl_s: float, start_limit: int = 5,
                    starts_ttl_s: float = 3600.0) -> str:
        keys = [self._key(request_id), self._marker_key(request_id),
                self._claim_key(request_id), self._starts_key(request_id)]
        args: list[str | bytes | int] = [
            holder, _ms(claim_ttl_s), running.to_json(), _ms(running_ttl_s), start_limit,
            _ms(starts_ttl_s), self.updates_channel, request_id]
        state = await redis_call("begin script", self._run(self._begin, keys, args))
        return state.decode() if isinstance(state, bytes) else str(state)

    async def finish(self, request_id: str, holder: str, final: ResultRecord, *,
                     ttl_s: float) -> bool:
        return await self._write_final(request_id, final, ttl_s, holder=holder)

    async def _write_final(self, request_id: str, final: ResultRecord, ttl_s: float, *,
                           holder: str | None) -> bool:
        if not final.is_final:
            raise ValueError(f"not a final record: {final.status}")
        keys = [self._key(request_id), self._marker_key(request_id),
                self._claim_key(request_id)]
        args: list[str | bytes | int] = [
            final.to_json(), _ms(ttl_s), self.finals_channel, request_id,
            "1" if holder is not None else ""]
        return bool(await redis_call("finish script", self._run(self._finish, keys, args)))

    async def get(self, request_id: str) -> ResultRecord | None:
        return _parse(await redis_call("GET", self._call("GET", self._key(request_id))))

    async def get_many(self, request_ids: Sequence[str]) -> list[ResultRecord | None]:
        if not request_ids:
            return []
        raws = await redis_call("MGET", self._mget([self._key(r) for r in request_ids]))
        return [_parse(raw) for raw in raws]

    async def _mget(self, keys: list[str]) -> list[Any]:
        """The values of `keys`, in their order: one MGET (all keys on one server)."""
        return list(await self._call("MGET", *keys))

    async def renew_claim(self, request_id: str, holder: str, *, ttl_s: float) -> bool:
        key = self._claim_key(request_id)
        return bool(await redis_call("renew script",
                                     self._run(self._renew, [key], [holder, _ms(ttl_s)])))

    async def release_claim(self, request_id: str, holder: str) -> None:
        keys = [self._claim_key(request_id), self._starts_key(request_id)]
        await redis_call("release script", self._run(self._release, keys, [holder]))

    async def subscribe_finals(self) -> RedisFinalsSubscription:
        return await self._subscribe(self.finals_channel)

    async def subscribe_updates(self) -> RedisFinalsSubscription:
        """Notices of every record change after Queued: Running writes (the updates channel)
        and final ones (the finals channel), on one connection."""
        return await self._subscribe(self.updates_channel, self.finals_channel)

    async def _pubsub(self) -> PubSub:
        """A pub/sub connection of its own (not connected yet)."""
        assert isinstance(self._redis, Redis)
        return self._redis.pubsub()

    async def _subscribe(self, *channels: str) -> RedisFinalsSubscription:
        pubsub = await redis_call("SUBSCRIBE", self._pubsub())
        try:
            await pubsub.subscribe(*channels)
            # Return only once Redis confirmed every subscription.
            confirmed = 0
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                while confirmed < len(channels):
                    message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
                    if message is not None and message["type"] == "subscribe":
                        confirmed += 1
        except Exception as exc:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise unavailable("SUBSCRIBE", exc) from exc
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        return RedisFinalsSubscription(pubsub)


class RedisFinalsSubscription:
    """One Redis pub/sub connection subscribed to the finals channel (and, for
    `subscribe_updates`, the updates channel): each notice is a request id."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    async def next(self, timeout_s: float) -> str | None:
        message = await redis_call("pub/sub read", self._pubsub.get_message(
            ignore_subscribe_messages=True, timeout=timeout_s))
        if message is None or message.get("type") != "message":
            return None
        data = message["data"]
        return data.decode() if isinstance(data, bytes) else str(data)

    async def close(self) -> None:
        await redis_call("pub/sub close", self._pubsub.aclose())


def _parse(raw: Any) -> ResultRecord | None:
    if raw is None:
        return None
    try:
        return ResultRecord.from_json(raw)
    except MalformedRecord as exc:
        # Records are input (another core may have written it): it stands as a final record
        # that the API answers with 502 bad_record, so that nobody waits on it for ever.
        return ResultRecord.unreadable(str(exc))
