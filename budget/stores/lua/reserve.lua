-- Reserve: apply every hold or none, after giving back the money of reservations that expired.
-- KEYS[1]  sorted set of reservation ids by expiry time (epoch seconds, the caller's clock)
-- KEYS[2]  this reservation's hash: counter key -> amount held
-- KEYS[3..] the counters to hold on
-- ARGV[1] now, ARGV[2] this reservation's expiry, ARGV[3] reservation id,
-- ARGV[4] the key prefix of reservation hashes (expired ones are found by id, so their keys are built here),
-- ARGV[5] '1' to refuse a counter that does not exist (seeded only), then per counter: amount, limit ('' for none).
-- Returns 0 on success, else the 1-based index of the first counter that does not exist (seeded only)
-- or would pass its limit.

-- A reservation still here at its expiry belongs to a call whose process died: release it first,
-- so its money counts again in the check below. "exp <= now" is expired, as in the memory store.
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, rid in ipairs(expired) do
  local hkey = ARGV[4] .. rid
  local held = redis.call('HGETALL', hkey)
  for i = 1, #held, 2 do
    -- A counter that expired with its period is gone for good: recreating it negative would be garbage.
    if redis.call('EXISTS', held[i]) == 1 then
      redis.call('DECRBY', held[i], held[i + 1])
    end
  end
  redis.call('DEL', hkey)
  redis.call('ZREM', KEYS[1], rid)
end

-- A reservation id already held is a retried call whose first try did apply (the connection
-- died before the reply): it is a success, never a second hold.
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end

local n = #KEYS - 2
-- Seeded only: a missing counter is refused, never created from 0 (it would read as seeded).
if ARGV[5] == '1' then
  for i = 1, n do
    if redis.call('EXISTS', KEYS[2 + i]) == 0 then
      return i
    end
  end
end

for i = 1, n do
  local limit = ARGV[5 + 2 * i]
  if limit ~= '' then
    local current = tonumber(redis.call('GET', KEYS[2 + i]) or '0')
    if current + tonumber(ARGV[4 + 2 * i]) > tonumber(limit) then
      return i
    end
  end
end

for i = 1, n do
  redis.call('INCRBY', KEYS[2 + i], ARGV[4 + 2 * i])
  redis.call('HINCRBY', KEYS[2], KEYS[2 + i], ARGV[4 + 2 * i])
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
return 0
