-- Delete counters and the holds on them after an outage, unless the outage was already cleaned up
-- there by another process (FailoverHotStore's switch back). KEYS[1] the last outage cleaned up,
-- KEYS[2] the index of open reservations, KEYS[3..] the counters; ARGV[1] the outage epoch ('' for
-- none: delete anyway), ARGV[2] the key prefix of reservation hashes. 1 if it deleted.
if ARGV[1] ~= '' then
  if tonumber(redis.call('GET', KEYS[1]) or '-1') >= tonumber(ARGV[1]) then
    return 0
  end
  redis.call('SET', KEYS[1], ARGV[1])
end
local doomed = {}
for i = 3, #KEYS do
  doomed[KEYS[i]] = true
  redis.call('DEL', KEYS[i])
end
for _, rid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local hkey = ARGV[2] .. rid
  for _, counter in ipairs(redis.call('HKEYS', hkey)) do
    if doomed[counter] then
      redis.call('HDEL', hkey, counter)
    end
  end
end
return 1
