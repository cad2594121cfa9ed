-- Lifts the lock of the user's OTP factor and resets its failure count.
-- (After prelude.lua: key, clock; ARGV[1] is the deadline.)
-- ARGV[2]  now (the replica's clock), Unix microseconds: lock expiry and the change date
-- Returns  {"ok", sequence} | {"absent"} | {"not_locked"}
local f = redis.call('HMGET', key, 's', 'u', 'q')
if not tonumber(f[1]) then
  return {'absent'}
end
local locked = tonumber(f[2])
if not locked or (locked ~= -1 and locked <= tonumber(ARGV[2])) then
  return {'not_locked'}
end
local sequence = string.format('%d', math.max(tonumber(f[3]) + 1, clock))
redis.call('HDEL', key, 'u')
redis.call('HSET', key, 'n', 0, 'q', sequence, 'm', ARGV[2])
return {'ok', tonumber(sequence)}
