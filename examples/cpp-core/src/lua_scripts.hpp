// The Lua scripts of the Python core's Redis adapters, byte for byte (adapters/redis_results.py
// and adapters/redis_users.py), so that both cores take the very same atomic steps (and Redis
// caches them under the same SHA1). Keep them identical to the Python texts.
#pragma once

// KEYS: record, marker, claim   ARGV: json, ttl ms, channel, request_id, release claim ('1'/'')
inline const char* const kFinishScript = R"LUA(
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[5] == '1' then redis.call('DEL', KEYS[3]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
)LUA";

// KEYS: record, marker   ARGV: json, ttl ms
inline const char* const kProgressScript = R"LUA(
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
)LUA";

// KEYS: record, marker, claim, starts
// ARGV: holder, claim ms, running json, running ttl ms, start limit, starts ttl ms
// Returns 'final', 'held', 'exhausted' or 'started'.
inline const char* const kBeginScript = R"LUA(
if redis.call('EXISTS', KEYS[2]) == 1 then return 'final' end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[1] then return 'held' end
if not holder then
  local starts = redis.call('INCR', KEYS[4])
  redis.call('PEXPIRE', KEYS[4], ARGV[6])
  if starts > tonumber(ARGV[5]) then return 'exhausted' end
end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 'started'
)LUA";

// KEYS: claim   ARGV: holder, claim ms
inline const char* const kRenewClaimScript = R"LUA(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
)LUA";

// KEYS: claim, starts   ARGV: holder
inline const char* const kReleaseClaimScript = R"LUA(
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DECR', KEYS[2]) end
return 1
)LUA";

// KEYS: next_id, ids, by_request, by_email   ARGV: name, email, user key prefix, dedupe ttl ms
inline const char* const kCreateUserScript = R"LUA(
local done = redis.call('GET', KEYS[3])
if done then return {1, tonumber(done)} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {0} end
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', ARGV[3] .. id, 'name', ARGV[1], 'email', ARGV[2])
redis.call('SET', KEYS[4], id)
redis.call('ZADD', KEYS[2], id, id)
redis.call('SET', KEYS[3], id, 'PX', ARGV[4])
return {2, id}
)LUA";

// KEYS: user   ARGV: new name or '', new email or '', email key prefix, id
inline const char* const kUpdateUserScript = R"LUA(
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local cur = redis.call('HMGET', KEYS[1], 'name', 'email')
local name, email = cur[1], cur[2]
if ARGV[1] ~= '' then name = ARGV[1] end
if ARGV[2] ~= '' and ARGV[2] ~= email then
  if redis.call('EXISTS', ARGV[3] .. ARGV[2]) == 1 then return {-1} end
  redis.call('DEL', ARGV[3] .. email)
  redis.call('SET', ARGV[3] .. ARGV[2], ARGV[4])
  email = ARGV[2]
end
redis.call('HSET', KEYS[1], 'name', name, 'email', email)
return {1, name, email}
)LUA";

// KEYS: user, ids   ARGV: email key prefix, id
inline const char* const kDeleteUserScript = R"LUA(
local email = redis.call('HGET', KEYS[1], 'email')
if not email then return 0 end
redis.call('DEL', KEYS[1], ARGV[1] .. email)
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
)LUA";

