-- Sliding window rate limit over an exact log: a sorted set of event times.
-- KEYS[1] the log. ARGV[1] now - window (an event that old has left the window), ARGV[2] limit,
-- ARGV[3] now, ARGV[4] a unique member for this event, ARGV[5] the log's expiry in milliseconds.
-- Returns nil if the event is allowed (and counted), else the oldest event's time as a string,
-- from which the caller works out the wait (a Lua number would come back truncated to an integer).
-- An event already in the log is this very call sent again (the client retried after a lost
-- reply; the member is unique to the call): allowed, as its first try was, and counted once.

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  return false
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
-- Once a whole window passes without events the log is empty: let Redis drop it.
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return false
