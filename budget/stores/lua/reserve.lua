-- Reserve: apply every hold or none, after giving back the money of reservations that expired
-- (reserve_core.lua, put before this file).
-- KEYS[1]  sorted set of reservation ids by expiry time (epoch seconds, the caller's clock)
-- KEYS[2]  this reservation's hash: counter key -> amount held
-- KEYS[3..] the counters to hold on
-- ARGV[1] now, ARGV[2] this reservation's expiry, ARGV[3] reservation id,
-- ARGV[4] the key prefix of reservation hashes,
-- ARGV[5] '1' to refuse a counter that does not exist (seeded only), then per counter: amount, limit ('' for none).
-- Returns 0 on success, else the 1-based index of the first counter that does not exist (seeded only)
-- or would pass its limit.

local counters, amounts, limits = {}, {}, {}
for i = 1, #KEYS - 2 do
  counters[i] = KEYS[2 + i]
  amounts[i] = ARGV[4 + 2 * i]
  limits[i] = ARGV[5 + 2 * i]
end
return reserve_holds(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1', counters, amounts, limits)
