"""RedisResultStore: result records and work claims in Redis (real, or fakeredis in tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from adapters.redis_errors import translate_errors
from reference.records import MalformedRecord, ResultRecord

# Write a record unless the one stored is final (Success or Fail): a final record is never
# overwritten, whoever tries. Records written by other producers are parsed the same way.
_PUT_UNLESS_FINAL = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and type(doc) == 'table' and (doc['status'] == 'Success' or doc['status'] == 'Fail') then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_TAKE_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

_RENEW_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


SUBSCRIBE_TIMEOUT_S = 5.0


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisResultStore:
    """Records under `<prefix><request_id>`; claims under `<prefix>claim:<request_id>`."""

    def __init__(self, client: Redis, *, key_prefix: str = "") -> None:
        self._redis = client
        self._prefix = key_prefix
        self._put = client.register_script(_PUT_UNLESS_FINAL)
        self._take = client.register_script(_TAKE_CLAIM)
        self._renew = client.register_script(_RENEW_CLAIM)
        self._release = client.register_script(_RELEASE_CLAIM)

    def _key(self, request_id: str) -> str:
        return self._prefix + request_id

    @property
    def finals_channel(self) -> str:
        return f"{self._prefix}reference:finals"

    def _claim_key(self, request_id: str) -> str:
        return f"{self._prefix}claim:{request_id}"

    @translate_errors
    async def ping(self) -> None:
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose(close_connection_pool=True)

    @translate_errors
    async def put(self, request_id: str, record: ResultRecord, *, ttl_s: float) -> bool:
        written = await self._put(keys=[self._key(request_id)], args=[record.to_json(), _ms(ttl_s)])
        return bool(written)

    @translate_errors
    async def get(self, request_id: str) -> ResultRecord | None:
        return _parse(await self._redis.get(self._key(request_id)))

    @translate_errors
    async def get_many(self, request_ids: Sequence[str]) -> list[ResultRecord | None]:
        if not request_ids:
            return []
        raws = await self._redis.mget([self._key(r) for r in request_ids])
        return [_parse(raw) for raw in raws]

    @translate_errors
    async def claim(self, request_id: str, holder: str, *, ttl_s: float) -> bool:
        return bool(await self._take(keys=[self._claim_key(request_id)], args=[holder, _ms(ttl_s)]))

    @translate_errors
    async def renew_claim(self, request_id: str, holder: str, *, ttl_s: float) -> bool:
        key = self._claim_key(request_id)
        return bool(await self._renew(keys=[key], args=[holder, _ms(ttl_s)]))

    @translate_errors
    async def release_claim(self, request_id: str, holder: str) -> None:
        await self._release(keys=[self._claim_key(request_id)], args=[holder])


    @translate_errors
    async def announce_final(self, request_id: str) -> None:
        await self._redis.publish(self.finals_channel, request_id)

    @translate_errors
    async def subscribe_finals(self) -> RedisFinalsSubscription:
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self.finals_channel)
            # Return only once Redis confirmed the subscription.
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                while True:
                    message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT_S)
                    if message is not None and message["type"] == "subscribe":
                        break
        except BaseException:
            await pubsub.aclose()
            raise
        return RedisFinalsSubscription(pubsub)


class RedisFinalsSubscription:
    """One Redis pub/sub subscription to the finals channel."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    @translate_errors
    async def next(self, timeout_s: float) -> str | None:
        message = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                 timeout=timeout_s)
        if message is None or message.get("type") != "message":
            return None
        data = message["data"]
        return data.decode() if isinstance(data, bytes) else str(data)

    @translate_errors
    async def close(self) -> None:
        await self._pubsub.aclose()


def _parse(raw: Any) -> ResultRecord | None:
    if raw is None:
        return None
    try:
        return ResultRecord.from_json(raw)
    except MalformedRecord:
        # Something else lives under this key: to a client it is no result of ours.
        return None
