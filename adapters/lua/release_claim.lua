-- KEYS: claim, starts   ARGV: holder
-- A hand-back, not a death: the claim goes and its start is taken back.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('DECR', KEYS[2]) end
return 1
