-- Enrolls a new OTP factor, replacing an unverified one ("last added wins").
-- KEYS[1]  the user's factor hash, "<prefix>:{<org>:<user>}"
-- ARGV[1]  sealed secret (binary)
-- ARGV[2]  algorithm ("SHA1" | "SHA256" | "SHA512")
-- ARGV[3]  digits
-- ARGV[4]  period in seconds
-- ARGV[5]  now, Unix microseconds
-- Returns  {"ok", sequence} | {"exists"} when a READY factor is present.
-- Fields: s state (1 NOT_READY, 2 READY), f factor id, a/d/p params, k sealed secret,
-- l last accepted step, n consecutive failures, u locked until (-1: until unlocked),
-- q sequence, c created, m changed. The sequence survives removal so it never goes back.
local key = KEYS[1]
local current = redis.call('HMGET', key, 's', 'q')
if tonumber(current[1]) == 2 then
  return {'exists'}
end
local sequence = (tonumber(current[2]) or 0) + 1
redis.call('DEL', key)
redis.call('HSET', key,
  's', 1, 'f', sequence, 'a', ARGV[2], 'd', ARGV[3], 'p', ARGV[4], 'k', ARGV[1],
  'n', 0, 'q', sequence, 'c', ARGV[5], 'm', ARGV[5])
return {'ok', sequence}
