-- Uses one recovery code at login, once across all replicas: the lock, the failure count and
-- the code are all checked and changed here. A transcription of `decide_redeem`
-- (src/domain/recovery.rs), step for step; a wrong code counts toward the same lockout as a
-- wrong TOTP code, and a lock refuses both.
-- (After prelude.lua: key, clock, audit(); ARGV[1] is the deadline, ARGV[2] the audit stamp.)
-- ARGV[3]  now (the replica's clock), Unix microseconds: lock expiry and the change date
-- ARGV[4]  failures that lock (0: never)
-- ARGV[5]  lock duration in microseconds (0: until an admin unlocks)
-- ARGV[6…] the typed code's field under each key of the seal key ring, "r:<id>:<hex HMAC>"
-- Returns  {"ok", sequence, remaining, handed on}
--        | {"invalid", failures, lock (0 none, -1 until unlocked, else until), handed on}
--          (handed on: audit.lua's `hand_on`)
--        | {"locked", lock} (nothing compared, nothing consumed) | {"none"} (no codes held)
local f = redis.call('HMGET', key, 'n', 'u', 'q')
local now = tonumber(ARGV[3])
local failures, active, expired = lockout_standing(f[1], f[2], now)
if active then
  return {'locked', active}
end
local held = #recovery_code_fields()
if held == 0 then
  return {'none'}
end
local found = nil
for index = 6, #ARGV do
  if redis.call('HEXISTS', key, ARGV[index]) == 1 then
    found = ARGV[index]
    break
  end
end
local sequence = string.format('%d', math.max((tonumber(f[3]) or 0) + 1, clock))
if expired then
  redis.call('HDEL', key, 'u')
  audit('lock_expired', sequence)
end
if found then
  redis.call('HDEL', key, found)
  redis.call('HSET', key, 'n', 0, 'q', sequence, 'm', ARGV[3])
  audit('recovery_code_used', sequence)
  return {'ok', tonumber(sequence), held - 1, hand_on()}
end
failures = failures + 1
local lock = lock_after(failures, tonumber(ARGV[4]), tonumber(ARGV[5]), now)
if lock ~= 0 then
  redis.call('HSET', key, 'u', string.format('%d', lock))
end
redis.call('HSET', key, 'n', failures, 'q', sequence, 'm', ARGV[3])
audit('check_invalid', sequence)
if lock ~= 0 then
  audit('locked', sequence)
end
return {'invalid', failures, lock, hand_on()}
