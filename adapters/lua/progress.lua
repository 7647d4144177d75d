-- KEYS: record, marker   ARGV: json, ttl ms
-- A Running update, unless the request is already final.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
