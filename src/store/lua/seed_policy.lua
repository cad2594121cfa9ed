-- Applies the configuration's seed of an organization's policies once (`PolicySeed`): each
-- part the organization has not set, then never again, so that the API's changes (resets
-- included) stand across restarts and replicas with other files.
-- (After policy_prelude.lua: key, clock, sequence, changed(), set_part(); ARGV[1] is the deadline.)
-- ARGV[2]  the lockout part's stored form, or "" for none
-- ARGV[3]  the otp part's stored form, or "" for none
-- ARGV[4]  now (the replica's clock), Unix microseconds
-- ARGV[5]  the organization id
-- Returns  {"ok", sequence} (a part written) | {"kept"} (seeded before, or nothing to write)
if redis.call('HEXISTS', key, 'seeded') == 1 then
  return {'kept'}
end
redis.call('HSET', key, 'v', 1, 'seeded', 1)
local wrote = false
for _, part in ipairs({{'lockout', ARGV[2]}, {'otp', ARGV[3]}}) do
  if part[2] ~= '' and redis.call('HEXISTS', key, part[1]) == 0 then
    set_part(part[1], part[2], ARGV[4])
    wrote = true
  end
end
if wrote then
  return {'ok', changed(ARGV[5])}
end
return {'kept'}
