-- The reservation step of reserve.lua and hit_get.lua (this file is put before each of them):
-- give back the money of reservations that expired, then apply every hold or none.
-- due: sorted set of reservation ids by expiry time (epoch seconds, the caller's clock); hkey:
-- this reservation's hash (counter key -> amount held); now; expiry: this reservation's; rid: its
-- id; prefix: the key prefix of reservation hashes (expired ones are found by id, so their keys are
-- built here); seeded_only: refuse a counter that does not exist; counters, amounts, limits: one
-- per hold (limit '' for none).
-- Returns 0 on success, else the 1-based index of the first counter that does not exist (seeded
-- only) or would pass its limit.
local function reserve_holds(due, hkey, now, expiry, rid, prefix, seeded_only, counters, amounts, limits)
  -- A reservation still here at its expiry belongs to a call whose process died: release it first,
  -- so its money counts again in the check below. "exp <= now" is expired, as in the memory store.
  local expired = redis.call('ZRANGEBYSCORE', due, '-inf', now)
  for _, old in ipairs(expired) do
    local okey = prefix .. old
    local held = redis.call('HGETALL', okey)
    for i = 1, #held, 2 do
      -- A counter that expired with its period is gone for good: recreating it negative would be garbage.
      if redis.call('EXISTS', held[i]) == 1 then
        redis.call('DECRBY', held[i], held[i + 1])
      end
    end
    redis.call('DEL', okey)
    redis.call('ZREM', due, old)
  end

  -- A reservation id already held is a retried call whose first try did apply (the connection
  -- died before the reply): it is a success, never a second hold.
  if redis.call('EXISTS', hkey) == 1 then
    return 0
  end

  -- Seeded only: a missing counter is refused, never created from 0 (it would read as seeded).
  if seeded_only then
    for i = 1, #counters do
      if redis.call('EXISTS', counters[i]) == 0 then
        return i
      end
    end
  end

  for i = 1, #counters do
    if limits[i] ~= '' then
      local current = tonumber(redis.call('GET', counters[i]) or '0')
      if current + tonumber(amounts[i]) > tonumber(limits[i]) then
        return i
      end
    end
  end

  for i = 1, #counters do
    redis.call('INCRBY', counters[i], amounts[i])
    redis.call('HINCRBY', hkey, counters[i], amounts[i])
  end
  redis.call('ZADD', due, expiry, rid)
  return 0
end
