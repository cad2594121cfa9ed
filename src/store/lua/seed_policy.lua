-- Applies the configuration's seed of an organization's policies once (`PolicySeed`): each
-- part the organization has not set, then never again, so that the API's changes (resets
-- included) stand across restarts and replicas with other files.
-- (After policy_prelude.lua: key, clock, sequence, changed(), set_part(); ARGV[1] is the deadline, ARGV[2] the audit stamp.)
-- ARGV[3]  the lockout part's stored form, or "" for none
-- ARGV[4]  the otp part's stored form, or "" for none
-- ARGV[5]  now (the replica's clock), Unix microseconds
-- ARGV[6]  the organization id
-- Returns  {"ok", sequence, handed on} (a part written) | {"kept"} (seeded before, or nothing to write)
if redis.call('HEXISTS', key, 'seeded') == 1 then
  return {'kept'}
end
redis.call('HSET', key, 'v', 1, 'seeded', 1)
local wrote = false
for _, part in ipairs({{'lockout', ARGV[3]}, {'otp', ARGV[4]}}) do
  if part[2] ~= '' and redis.call('HEXISTS', key, part[1]) == 0 then
    set_part(part[1], part[2], ARGV[5])
    wrote = true
  end
end
if wrote then
  local changed_at = changed(ARGV[6])
  audit('policy_changed', string.format('%d', changed_at))
  return {'ok', changed_at, hand_on()}
end
return {'kept'}
