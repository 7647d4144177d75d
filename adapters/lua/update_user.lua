-- KEYS: user   ARGV: new name or '', new email or '', email key prefix, id
-- Returns {0} (no such user), {-1} (email taken) or {1, name, email}.
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
