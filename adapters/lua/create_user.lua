-- KEYS: next_id, ids, by_request, by_email   ARGV: name, email, user key prefix, dedupe ttl ms
-- Returns {1, id} (this request made it before), {0} (email taken) or {2, id} (created).
local done = redis.call('GET', KEYS[3])
if done then return {1, tonumber(done)} end
if redis.call('EXISTS', KEYS[4]) == 1 then return {0} end
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', ARGV[3] .. id, 'name', ARGV[1], 'email', ARGV[2])
redis.call('SET', KEYS[4], id)
redis.call('ZADD', KEYS[2], id, id)
redis.call('SET', KEYS[3], id, 'PX', ARGV[4])
return {2, id}
