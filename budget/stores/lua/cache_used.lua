-- The bookkeeping of cache reads made by hit_get.lua, for many of them in one step: each entry
-- still live becomes the most recently used (in the order given), an expired one is deleted
-- everywhere, and the hit and miss counters grow by the numbers given.
-- KEYS[1] recency, KEYS[2] expiry, KEYS[3] the use sequence counter (as in cache_get.lua),
-- KEYS[4] the hit counter, KEYS[5] the miss counter, KEYS[6..] the entries.
-- ARGV[1] now, ARGV[2] hits, ARGV[3] misses.

local now = tonumber(ARGV[1])
for i = 6, #KEYS do
  local expires = redis.call('ZSCORE', KEYS[2], KEYS[i])
  if expires and tonumber(expires) > now and redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[3]), KEYS[i])
  elseif expires then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[1], KEYS[i])
    redis.call('ZREM', KEYS[2], KEYS[i])
  end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('INCRBY', KEYS[4], ARGV[2])
end
if tonumber(ARGV[3]) > 0 then
  redis.call('INCRBY', KEYS[5], ARGV[3])
end
return 0
