-- KEYS: record, marker, claim, starts
-- ARGV: holder, claim ms, running json, running ttl ms, start limit, starts ttl ms,
--       updates channel, request_id
-- Returns 'final', 'held' (another live holder), 'exhausted' (started too often) or 'started';
-- 'started' (a Running write) is announced: request_id published on the updates channel.
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
if ARGV[8] then redis.call('PUBLISH', ARGV[7], ARGV[8]) end
return 'started'
