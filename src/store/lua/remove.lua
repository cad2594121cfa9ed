-- Removes the user's OTP factor, keeping only the sequence (it must never go back).
-- (After prelude.lua: key, clock; ARGV[1] is the deadline.)
-- ARGV[2]  now (the replica's clock), Unix microseconds: the change date
-- Returns  {"ok", sequence} | {"absent"}
local f = redis.call('HMGET', key, 's', 'q')
if not tonumber(f[1]) then
  return {'absent'}
end
local sequence = string.format('%d', math.max(tonumber(f[2]) + 1, clock))
redis.call('DEL', key)
redis.call('HSET', key, 'q', sequence, 'm', ARGV[2])
return {'ok', tonumber(sequence)}
