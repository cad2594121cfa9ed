-- Removes the user's OTP factor. The sequence stays (it must never go back), and so do what
-- is the user's rather than the enrollment's: failures, the lock and the recovery codes.
-- (After prelude.lua: key, clock, audit(); ARGV[1] is the deadline, ARGV[2] the audit stamp.)
-- ARGV[3]  now (the replica's clock), Unix microseconds: the change date
-- Returns  {"ok", sequence, handed on} | {"absent"}
local f = redis.call('HMGET', key, 's', 'q')
if not tonumber(f[1]) then
  return {'absent'}
end
local sequence = string.format('%d', math.max(tonumber(f[2]) + 1, clock))
redis.call('HDEL', key, 's', 'i', 'f', 'a', 'd', 'p', 'k', 'l', 'c')
redis.call('HSET', key, 'q', sequence, 'm', ARGV[3])
audit('removed', sequence)
return {'ok', tonumber(sequence), hand_on()}
