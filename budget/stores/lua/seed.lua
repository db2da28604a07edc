-- Seed a counter from the ledger, unless it exists, with what settles left out of it meanwhile.
-- KEYS[1] the counter, KEYS[2] its left-out log (settle.lua). ARGV[1] the value (the ledger's sum),
-- ARGV[2] its ttl, ARGV[3..] the log's rows the value already counts (the seeder read the log and
-- asked the ledger first). Any other row in the log was left out after that read: its amount is
-- added, since the sum may lack it (it counts twice where the sum had it: a budget reached a little
-- early, never passed). The log is then cleared. Returns 1 if the counter was written.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local left = redis.call('HGETALL', KEYS[2])
if #left > 0 then
  local seen = {}
  for i = 3, #ARGV do
    seen[ARGV[i]] = true
  end
  for i = 1, #left, 2 do
    if not seen[left[i]] then
      -- INCRBY keeps the arithmetic in Redis's 64-bit integers, not Lua's doubles.
      redis.call('INCRBY', KEYS[1], left[i + 1])
    end
  end
  redis.call('DEL', KEYS[2])
end
return 1
