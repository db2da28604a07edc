-- Cache clear: delete every entry the recency set knows. KEYS[1] recency, KEYS[2] expiry.
-- Returns how many entries there were.

local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, key in ipairs(keys) do
  redis.call('DEL', key)
end
redis.call('DEL', KEYS[1], KEYS[2])
return #keys
