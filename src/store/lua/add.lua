-- Enrolls a new OTP factor, replacing an unverified one ("last added wins").
-- (After prelude.lua: key, clock, audit(); ARGV[1] is the deadline, ARGV[2] the audit stamp.)
-- ARGV[3]  factor id: 16 random bytes made by the caller, never reused
-- ARGV[4]  sealed secret (binary)
-- ARGV[5]  algorithm ("SHA1" | "SHA256" | "SHA512")
-- ARGV[6]  digits
-- ARGV[7]  period in seconds
--          (ARGV[5…7] all empty: format 4's implied parameters, SHA1, 6 digits, 30 s)
-- ARGV[8]  now (the replica's clock), Unix microseconds: the creation and change dates
-- Returns  {"ok", sequence, handed on} | {"exists"} when a READY factor is present
-- The fields of the hash:
--   v format (absent: 1; never lowered)   s state (1 NOT_READY, 2 READY)   i factor id
--   f the enrollment's sequence (format 1's factor id; kept so that a format-1 reader, still
--     running during a rolling upgrade, can serve this record; absent in format 4)
--   a/d/p algorithm, digits, period (format 4: absent when they are SHA1, 6, 30)
--   k sealed secret   l last accepted step
--   n consecutive failures   u locked until (-1: until unlocked)   q sequence
--   c created   m changed
--   r:<seal key id>:<hex HMAC> one per unused recovery code (format 3, `generate_codes.lua`)
-- Failures, the lock and the recovery codes are the user's, not the enrollment's: a new
-- enrollment keeps them (the lock ends only by expiry, a success or an admin's unlock).
-- The sequence is at least Redis's clock in microseconds and above the user's previous one,
-- so it never goes back, not even after Redis loses the key; it survives removal too.
local current = redis.call('HMGET', key, 's', 'q')
if tonumber(current[1]) == 2 then
  return {'exists'}
end
local sequence = string.format('%d', math.max((tonumber(current[2]) or 0) + 1, clock))
redis.call('HDEL', key, 'l', 'a', 'd', 'p', 'f')
local format = math.max(version, 2)
if ARGV[5] == '' then
  -- Format 4: 32 bytes less per user. A release before it cannot read the record, and the
  -- prelude's format check keeps it away; so `f`, kept for format-1 readers, goes too.
  format = 4
else
  redis.call('HSET', key, 'f', sequence, 'a', ARGV[5], 'd', ARGV[6], 'p', ARGV[7])
end
redis.call('HSET', key,
  'v', format, 's', 1, 'i', ARGV[3], 'k', ARGV[4], 'q', sequence, 'c', ARGV[8], 'm', ARGV[8])
audit('enrolled', sequence)
return {'ok', tonumber(sequence), hand_on()}
