-- Cache size: drop entries expired by now (so they never count), then count what is left.
-- KEYS[1] recency, KEYS[2] expiry. ARGV[1] now.

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, key in ipairs(expired) do
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], key)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])
