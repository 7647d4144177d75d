-- KEYS: record, marker, claim   ARGV: json, ttl ms, channel, request_id, release claim ('1'/'')
-- The final record, once: the marker is set NX; then the record, the claim released, the notice.
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[5] == '1' then redis.call('DEL', KEYS[3]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
