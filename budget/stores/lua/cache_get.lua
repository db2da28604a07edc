-- Cache read: a live entry becomes the most recently used; an expired one is deleted.
-- KEYS[1] the value, KEYS[2] recency (sorted set, score = use sequence number),
-- KEYS[3] expiry (sorted set, score = expiry time), KEYS[4] the use sequence counter.
-- KEYS[5], KEYS[6] (optional) the hit and the miss counters: one is incremented.
-- ARGV[1] now. Returns the value or nil.

local function counted(value)
  if #KEYS >= 6 then
    redis.call('INCR', value and KEYS[5] or KEYS[6])
  end
  return value
end

local expires = redis.call('ZSCORE', KEYS[3], KEYS[1])
if not expires then
  return counted(false)
end
local value = false
if tonumber(expires) > tonumber(ARGV[1]) then
  value = redis.call('GET', KEYS[1])
end
if not value then
  -- Expired by the caller's clock, or dropped by Redis's own expiry: forget it everywhere.
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('ZREM', KEYS[3], KEYS[1])
  return counted(false)
end
-- A sequence number, not the time, orders uses: two uses within one clock tick still have an order.
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), KEYS[1])
return counted(value)
