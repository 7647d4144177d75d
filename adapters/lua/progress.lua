-- KEYS: record, marker   ARGV: json, ttl ms, updates channel, request_id
-- A Running update, unless the request is already final; a write is announced: request_id
-- published on the updates channel.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[4] then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
