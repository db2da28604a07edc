-- A rate-limit event, a read of counters and a look at cache entries in one round trip (the first
-- steps of a message).
-- KEYS[1] the rate-limit log (as in hit.lua), KEYS[2..ARGV[6]+1] the counters to read; after them,
-- if ARGV[7] is given, the cache's expiry set (as in cache_get.lua) and the cache entries to look at.
-- ARGV[1..5] as in hit.lua, ARGV[6] the number of counters, ARGV[7] now for the cache entries.
-- Returns {wait, values, entries}: wait is '' if the event is allowed (and counted), else the
-- oldest event's time as a string; values are the counters (nil where missing), read whether or not
-- the event was allowed; entries are the live cache values (false where missing or expired), read
-- only: the caller marks what it used later, in one step for many messages (cache_used.lua).

local wait = ''
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  wait = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
local n = tonumber(ARGV[6] or (#KEYS - 1))
local values = {}
if n > 0 then
  values = redis.call('MGET', unpack(KEYS, 2, n + 1))
end
local entries = {}
if ARGV[7] then
  local now = tonumber(ARGV[7])
  for i = n + 3, #KEYS do
    local expires = redis.call('ZSCORE', KEYS[n + 2], KEYS[i])
    local value = false
    if expires and tonumber(expires) > now then
      value = redis.call('GET', KEYS[i])
    end
    entries[#entries + 1] = value
  end
end
return {wait, values, entries}
