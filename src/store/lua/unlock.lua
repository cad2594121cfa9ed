-- Lifts the lock of the user's OTP factor and resets its failure count.
-- KEYS[1]  the user's factor hash
-- ARGV[1]  now, Unix microseconds
-- Returns  {"ok", sequence} | {"absent"} | {"not_locked"}
local key = KEYS[1]
local f = redis.call('HMGET', key, 's', 'u', 'q')
if not tonumber(f[1]) then
  return {'absent'}
end
local locked = tonumber(f[2])
if not locked or (locked ~= -1 and locked <= tonumber(ARGV[1])) then
  return {'not_locked'}
end
local sequence = tonumber(f[3]) + 1
redis.call('HDEL', key, 'u')
redis.call('HSET', key, 'n', 0, 'q', sequence, 'm', ARGV[1])
return {'ok', sequence}
