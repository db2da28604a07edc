-- A rate-limit event and a read of counters in one round trip (the first two steps of a message).
-- KEYS[1] the rate-limit log (as in hit.lua), KEYS[2..] the counters to read.
-- ARGV as in hit.lua. Returns {wait, values}: wait is '' if the event is allowed (and counted),
-- else the oldest event's time as a string; values are the counters (nil where missing), read
-- whether or not the event was allowed.

local wait = ''
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  wait = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
if #KEYS < 2 then
  return {wait, {}}
end
return {wait, redis.call('MGET', unpack(KEYS, 2))}
