-- Adds recovery codes to those the user holds, as ZITADEL does: the total may not pass the
-- maximum (a transcription of `domain::recovery::may_add`). The caller made the codes and hashed them; no code
-- reaches Redis, only its keyed hash.
-- (After prelude.lua: key, clock, audit(); ARGV[1] is the deadline, ARGV[2] the audit stamp.)
-- ARGV[3]  now (the replica's clock), Unix microseconds: the change date
-- ARGV[4]  the most codes a user may hold
-- ARGV[5…] one field per new code, "r:<seal key id>:<hex HMAC>"
-- Returns  {"ok", sequence, held, handed on} | {"too_many", held}
local held = #recovery_code_fields()
local adding = #ARGV - 4
if adding < 1 or held + adding > tonumber(ARGV[4]) then
  return {'too_many', held}
end
local sequence = string.format('%d',
  math.max((tonumber(redis.call('HGET', key, 'q')) or 0) + 1, clock))
for index = 5, #ARGV do
  redis.call('HSET', key, ARGV[index], 1)
end
-- At least format 3: a release that does not know recovery codes would delete them with the
-- enrollment, so it must leave this record alone (the prelude's format check). A format-4
-- record stays format 4.
redis.call('HSET', key, 'v', math.max(version, 3), 'q', sequence, 'm', ARGV[3])
audit('recovery_codes_generated', sequence)
return {'ok', tonumber(sequence), held + adding, hand_on()}
