-- Lifts the user's lock (set by TOTP or recovery codes) and resets the failure count.
-- (After prelude.lua: key, clock, audit(); ARGV[1] is the deadline, ARGV[2] the audit stamp.)
-- ARGV[3]  now (the replica's clock), Unix microseconds: lock expiry and the change date
-- Returns  {"ok", sequence, handed on} | {"absent"} (no factor, no codes) | {"not_locked"}
local f = redis.call('HMGET', key, 's', 'u', 'q')
local locked = tonumber(f[2])
if not locked or (locked ~= -1 and locked <= tonumber(ARGV[3])) then
  if tonumber(f[1]) or #recovery_code_fields() > 0 then
    return {'not_locked'}
  end
  return {'absent'}
end
local sequence = string.format('%d', math.max((tonumber(f[3]) or 0) + 1, clock))
redis.call('HDEL', key, 'u')
redis.call('HSET', key, 'n', 0, 'q', sequence, 'm', ARGV[3])
audit('unlocked', sequence)
return {'ok', tonumber(sequence), hand_on()}
