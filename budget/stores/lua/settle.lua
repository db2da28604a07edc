-- Settle: replace a reservation's held amounts by what was really spent, then forget it.
-- KEYS[1] sorted set of reservation ids by expiry, KEYS[2] the reservation's hash,
-- KEYS[3..] counters with an actual amount. ARGV[1] reservation id, ARGV[2] '1' for seeded only,
-- ARGV[3] the call's ledger row id ('' for none), ARGV[4] the left-out log's ttl, ARGV[5..] the
-- actual amounts.
-- An unknown or already released reservation holds nothing, so only the actual amounts are added.
-- Seeded only: a counter that does not exist is neither created nor changed (a hold on it went with
-- it). With a row id, an amount so left out is logged in the counter's log ('<counter>~left', row:
-- amount) for its next seed (seed.lua). Returns the 1-based indexes (in KEYS[3..]) of the counters
-- so left out.

local seeded_only = ARGV[2] == '1'
local row = ARGV[3]
local held = redis.call('HGETALL', KEYS[2])
local amount_held = {}
for i = 1, #held, 2 do
  amount_held[held[i]] = held[i + 1]
end

local left_out = {}
for i = 3, #KEYS do
  local key = KEYS[i]
  if seeded_only and redis.call('EXISTS', key) == 0 then
    left_out[#left_out + 1] = i - 2
    amount_held[key] = nil
    if row ~= '' and ARGV[i + 2] ~= '0' then
      redis.call('HSET', key .. '~left', row, ARGV[i + 2])
      redis.call('EXPIRE', key .. '~left', ARGV[4])
    end
  else
    redis.call('INCRBY', key, ARGV[i + 2])
    if amount_held[key] then
      -- INCRBY then DECRBY keeps the arithmetic in Redis's 64-bit integers, not Lua's doubles.
      redis.call('DECRBY', key, amount_held[key])
      amount_held[key] = nil
    end
  end
end
-- Counters held but not named in the actual amounts spent nothing: release them in full.
for i = 1, #held, 2 do
  if amount_held[held[i]] and not (seeded_only and redis.call('EXISTS', held[i]) == 0) then
    redis.call('DECRBY', held[i], held[i + 1])
  end
end

redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return left_out
