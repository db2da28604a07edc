-- Cache write, then evict the least recently used entries beyond max_size.
-- KEYS as in cache_get.lua. ARGV[1] value, ARGV[2] Redis expiry in milliseconds (frees memory;
-- the caller's clock in ARGV[3] decides what is expired), ARGV[3] expiry time, ARGV[4] max_size.

redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], KEYS[1])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), KEYS[1])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local victims = redis.call('ZRANGE', KEYS[2], 0, over - 1)
  for _, key in ipairs(victims) do
    redis.call('DEL', key)
    redis.call('ZREM', KEYS[3], key)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
return 0
