-- A message's first step in one round trip: a dedupe flag, a rate-limit event, a read of
-- counters, a look at cache entries and, on conditions, a reservation (reserve_core.lua, put
-- before this file).
-- KEYS[1] the rate-limit log (as in hit.lua); KEYS[2..n+1] the counters to read; with p peeks,
-- KEYS[n+2] the cache's expiry set (as in cache_get.lua) and KEYS[n+3..n+p+2] the entries; with
-- holds, then the sorted set of reservations by expiry and this reservation's hash (reserve.lua).
-- ARGV[1..5] as in hit.lua, ARGV[6] n, ARGV[7] now, ARGV[8] p, ARGV[9] h, the number of holds
-- (0: no reservation, and no more reservation arguments). With holds: ARGV[10] the reservation's
-- expiry, ARGV[11] its id, ARGV[12] the key prefix of reservation hashes, ARGV[13] 'unless': a
-- peek's index (0 for none), ARGV[14] e, then e pairs (a counter's index among the n, the value it
-- must hold), then h quadruples (the counter's index among the n, amount, limit, ceiling; '' for
-- none).
-- Last, only with a once-key (a message's dedupe flag): the key after every other key, its ttl in
-- seconds after every other argument; found by counting KEYS and ARGV against the layout above.
-- It is set first (SET NX), to this call's token: the rate-limit event's member (ARGV[4]), unique
-- to the call. If it held another token already, the call is a repeat and nothing else is done: no
-- event counted, nothing read or held. Its own token is this very call sent again (the client
-- retried after a lost reply): not a repeat, and it answers as its first try did: its event is
-- counted once and allowed, and its reservation (the same id), if the first try made it, is held
-- once and reported; the counters read then include that hold.
-- Returns {wait, values, entries, reserved, repeated}; for a repeat {'', {}, {}, 0, 1}. Else
-- repeated is 0, wait is '' if the event is allowed (and counted), else the oldest event's time
-- as a string; values are the counters (nil where missing), read whether or not the event was
-- allowed; entries are the live cache values (false where missing or expired), read only: the
-- caller marks what it used later, for many messages in one step (cache_used.lua); reserved is 1
-- if the reservation was made: the event allowed, the 'unless' entry not live, every expected
-- value there, every held counter present and at most its ceiling as read, and every hold within
-- its limit. Else nothing is held.

local n, now, p, h = tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
-- How many KEYS and ARGV there are without a once-key: one more of each is the key and its ttl.
local keys = 1 + n + (p > 0 and 1 + p or 0) + (h > 0 and 2 or 0)
local args = h > 0 and 14 + 2 * tonumber(ARGV[14]) + 4 * h or 9
if #ARGV ~= args + (#KEYS > keys and 1 or 0) then
  return redis.error_reply('hit_get: a once-key comes with its ttl')
end
local retried = false
if #KEYS > keys then
  local token = ARGV[4]
  local held = redis.call('SET', KEYS[#KEYS], token, 'NX', 'GET', 'EX', ARGV[#ARGV])
  if held and held ~= token then
    return {'', {}, {}, 0, 1}
  end
  retried = held == token
end

local wait = ''
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if retried and redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  -- Counted by this call's first try: allowed, as it was then.
elseif redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  wait = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end

local values = {}
if n > 0 then
  values = redis.call('MGET', unpack(KEYS, 2, n + 1))
end

local entries = {}
for i = 1, p do
  local entry = KEYS[n + 2 + i]
  local expires = redis.call('ZSCORE', KEYS[n + 2], entry)
  local value = false
  if expires and tonumber(expires) > tonumber(now) then
    value = redis.call('GET', entry)
  end
  entries[i] = value
end

local function admitted()
  if wait ~= '' then
    return false
  end
  local unless = tonumber(ARGV[13])
  if unless > 0 and entries[unless] then
    return false
  end
  local e = tonumber(ARGV[14])
  for j = 0, e - 1 do
    if values[tonumber(ARGV[15 + 2 * j])] ~= ARGV[16 + 2 * j] then
      return false
    end
  end
  local first = 15 + 2 * e
  for j = 0, h - 1 do
    local value = values[tonumber(ARGV[first + 4 * j])]
    local ceiling = ARGV[first + 4 * j + 3]
    if not value or (ceiling ~= '' and tonumber(value) > tonumber(ceiling)) then
      return false
    end
  end
  return true
end

local reserved = 0
local at = n + 2 + (p > 0 and 1 + p or 0)
-- A retry whose first try made the reservation goes straight to reserve_holds, which finds its id.
if h > 0 and ((retried and redis.call('EXISTS', KEYS[at + 1]) == 1) or admitted()) then
  local first = 15 + 2 * tonumber(ARGV[14])
  local counters, amounts, limits = {}, {}, {}
  for j = 0, h - 1 do
    counters[j + 1] = KEYS[1 + tonumber(ARGV[first + 4 * j])]
    amounts[j + 1] = ARGV[first + 4 * j + 1]
    limits[j + 1] = ARGV[first + 4 * j + 2]
  end
  if reserve_holds(KEYS[at], KEYS[at + 1], now, ARGV[10], ARGV[11], ARGV[12], true, counters, amounts, limits) == 0 then
    reserved = 1
  end
end
return {wait, values, entries, reserved, 0}
