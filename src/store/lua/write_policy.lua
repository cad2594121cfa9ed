-- Changes one part of an organization's policies: a transcription of `decide_write`
-- (src/domain/policy.rs), and the memory store runs the function itself; the API tests run
-- on both stores.
-- (After policy_prelude.lua: key, clock, sequence, changed(), set_part(); ARGV[1] is the deadline, ARGV[2] the audit stamp.)
-- ARGV[3]  the part: "lockout" | "otp"
-- ARGV[4]  the mode: "add" | "update" | "set" | "reset"
-- ARGV[5]  the part's new stored form ("" for a reset)
-- ARGV[6]  now (the replica's clock), Unix microseconds: the part's dates
-- ARGV[7]  the organization id (its entry in the change index)
-- Returns  {"ok", sequence, handed on} | {"exists"} | {"absent", sequence} | {"unchanged", sequence}
local part, mode, form = ARGV[3], ARGV[4], ARGV[5]
local current = redis.call('HGET', key, part)
if mode == 'add' and current then
  return {'exists'}
end
if (mode == 'update' or mode == 'reset') and not current then
  return {'absent', sequence}
end
if (mode == 'update' or mode == 'set') and current == form then
  return {'unchanged', sequence}
end
if mode == 'reset' then
  redis.call('HDEL', key, part, part .. '.c', part .. '.m')
else
  set_part(part, form, ARGV[6])
end
local changed_at = changed(ARGV[7])
audit('policy_changed', string.format('%d', changed_at))
return {'ok', changed_at, hand_on()}
