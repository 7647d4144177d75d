-- KEYS: claim   ARGV: holder, claim ms
-- Extends the claim while its holder still holds it.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
