-- Removes all the user's recovery codes. Refused while the user is locked, as ZITADEL does:
-- removal must not be a way around a lock that the codes' guesses set.
-- (After prelude.lua: key, clock, audit(); ARGV[1] is the deadline, ARGV[2] the audit stamp.)
-- ARGV[3]  now (the replica's clock), Unix microseconds: lock expiry and the change date
-- Returns  {"ok", sequence, handed on} | {"none"} | {"locked", lock}
local f = redis.call('HMGET', key, 'u', 'q')
local locked = tonumber(f[1])
if locked and (locked == -1 or locked > tonumber(ARGV[3])) then
  return {'locked', locked}
end
local fields = recovery_code_fields()
if #fields == 0 then
  return {'none'}
end
local sequence = string.format('%d', math.max((tonumber(f[2]) or 0) + 1, clock))
redis.call('HDEL', key, unpack(fields))
redis.call('HSET', key, 'q', sequence, 'm', ARGV[3])
audit('recovery_codes_removed', sequence)
return {'ok', tonumber(sequence), hand_on()}
