"""RedisUserRepository: the example domain's users in their own Redis key namespace.

Every change that touches more than one key runs as one Lua script, so that ids and emails stay
unique with any number of workers. The namespace (adapters/redis_keys.users_namespace,
`<prefix>{reference:users}:`) holds a hash tag: on a Redis Cluster every users key is in one
slot, so the scripts, which build some key names from their arguments, stay on one node.
"""

from __future__ import annotations

from typing import Any

from reference.adapters.lua_scripts import lua
from reference.adapters.redis_errors import redis_call
from reference.adapters.redis_keys import users_namespace
from reference.adapters.redis_results import RedisClient
from reference.domain import User
from reference.errors import Conflict, NotFound

DEDUPE_TTL_MS = 7 * 24 * 3600 * 1000  # longer than any redelivery could take


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisUserRepository:
    def __init__(self, client: RedisClient, *, namespace: str = users_namespace()) -> None:
        self._redis = client
        ns = namespace
        self._next_id = ns + "next_id"
        self._ids = ns + "ids"
        self._user_prefix = ns + "u:"
        self._email_prefix = ns + "email:"
        self._request_prefix = ns + "req:"
        self._create = client.register_script(lua("create_user"))
        self._update = client.register_script(lua("update_user"))
        self._delete = client.register_script(lua("delete_user"))

    async def create(self, name: str, email: str, *, request_id: str) -> User:
        keys = [self._next_id, self._ids, self._request_prefix + request_id,
                self._email_prefix + email]
        reply = await redis_call("create script", self._create(
            keys=keys, args=[name, email, self._user_prefix, DEDUPE_TTL_MS]))
        if int(reply[0]) == 0:
            raise Conflict(f"email already in use: {email}", field="email")
        user_id = int(reply[1])
        if int(reply[0]) == 1:
            # Done before under this request_id (a redelivery): answer what was created then.
            stored = await redis_call("HMGET", self._redis.hmget(
                self._user_prefix + str(user_id), "name", "email"))
            if stored[0] is not None:
                return User(user_id, _text(stored[0]), _text(stored[1]))
        return User(user_id, name, email)

    async def get(self, user_id: int) -> User:
        name, email = await redis_call("HMGET", self._redis.hmget(
            self._user_prefix + str(user_id), "name", "email"))
        if name is None:
            raise NotFound(f"no user with ID {user_id}", field="id")
        return User(user_id, _text(name), _text(email))

    async def list(self, *, limit: int, after: int | None) -> tuple[list[User], int | None]:
        low = "-inf" if after is None else f"({after}"
        ids = await redis_call("ZRANGEBYSCORE", self._redis.zrangebyscore(
            self._ids, low, "+inf", start=0, num=limit + 1))
        page = [int(i) for i in ids[:limit]]  # type: ignore[arg-type]  # member ids are digits
        pipe = self._redis.pipeline(transaction=False)
        for user_id in page:
            pipe.hmget(self._user_prefix + str(user_id), "name", "email")
        rows = await redis_call("pipelined HMGET", pipe.execute())
        users = [
            User(uid, _text(row[0]), _text(row[1]))
            for uid, row in zip(page, rows, strict=True)
            if row[0] is not None
        ]
        next_after = page[-1] if len(ids) > limit else None
        return users, next_after

    async def update(self, user_id: int, *, name: str | None, email: str | None) -> User:
        reply = await redis_call("update script", self._update(
            keys=[self._user_prefix + str(user_id)],
            args=[name or "", email or "", self._email_prefix, user_id],
        ))
        if int(reply[0]) == 0:
            raise NotFound(f"no user with ID {user_id}", field="id")
        if int(reply[0]) == -1:
            raise Conflict(f"email already in use: {email}", field="email")
        return User(user_id, _text(reply[1]), _text(reply[2]))

    async def delete(self, user_id: int) -> None:
        done = await redis_call("delete script", self._delete(
            keys=[self._user_prefix + str(user_id), self._ids],
            args=[self._email_prefix, user_id],
        ))
        if not done:
            raise NotFound(f"no user with ID {user_id}", field="id")
