-- KEYS: user, ids   ARGV: email key prefix, id
-- Returns 1 (deleted) or 0 (no such user).
local email = redis.call('HGET', KEYS[1], 'email')
if not email then return 0 end
redis.call('DEL', KEYS[1], ARGV[1] .. email)
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
