-- Removes the user's OTP factor, keeping only the sequence (it must never go back).
-- KEYS[1]  the user's factor hash
-- ARGV[1]  now, Unix microseconds
-- Returns  {"ok", sequence} | {"absent"}
local key = KEYS[1]
local f = redis.call('HMGET', key, 's', 'q')
if not tonumber(f[1]) then
  return {'absent'}
end
local sequence = tonumber(f[2]) + 1
redis.call('DEL', key)
redis.call('HSET', key, 'q', sequence, 'm', ARGV[1])
return {'ok', sequence}
