-- The start of every script: each is this prelude, then feed.lua and audit.lua, then its body
-- (`redis/mod.rs` assembles them), so the rules that hold for every change live here once:
--   the deadline: a script that starts after its request's deadline changes nothing (its
--     request has already been answered UNAVAILABLE);
--   the format: a record of a newer format than this release writes is left alone;
--   the audit trail: every change appends its events to the user's own list, in the same
--     step (audit.lua), so that there is no change without its event.
-- KEYS[1]  the user's hash, "<prefix>:{<org>:<user>}"
-- KEYS[2]  the user's events, "<prefix>:{<org>:<user>}:events" (a list; the same hash tag,
--          so the same slot)
-- KEYS[3]  on one Redis server only: the organization's feed, "<prefix>:audit:{<org>}", and
-- KEYS[4]  its marks, "<prefix>:audit:{<org>}:copied" (another hash tag, which a script
--          cannot reach under Redis Cluster: audit.lua's `hand_on`)
-- ARGV[1]  the request's deadline in Redis's clock, Unix microseconds
-- ARGV[2]  the change's audit stamp (its fields: audit.lua)
-- Defines  key; feed and copied (nil under Redis Cluster); clock, Redis's time in microseconds (it also floors the sequences);
--          version, the record's format; recovery_code_fields(), the user's recovery codes;
--          lockout_standing() and lock_after(), the lockout rule TOTP and recovery codes share;
--          events, the list that audit.lua's audit(kind, sequence) appends to
-- Returns  {"late"} | {"format", version}, or goes on with the body
local key = KEYS[1]
local events = KEYS[2]
local feed, copied = KEYS[3], KEYS[4]
local time = redis.call('TIME')
local clock = tonumber(time[1]) * 1000000 + tonumber(time[2])
if clock > tonumber(ARGV[1]) then
  return {'late'}
end
local version = tonumber(redis.call('HGET', key, 'v')) or 1
if version > 4 then
  return {'format', version}
end
-- The user's recovery codes: the fields "r:<seal key id>:<hex HMAC>" of the same hash (format
-- 3), one per unused code; the value is unused.
local function recovery_code_fields()
  local fields = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'r:' then
      fields[#fields + 1] = field
    end
  end
  return fields
end
-- Where the user stands against lockout as an attempt starts (`decide_attempt` and
-- `decide_redeem` begin with it): an active lock refuses the attempt; an expired one starts a
-- fresh count, and its field is to go (`expired`).
-- Returns failures, active lock (nil: none, else -1 or until), expired
local function lockout_standing(stored_failures, stored_lock, now)
  local locked = tonumber(stored_lock)
  if not locked then
    return tonumber(stored_failures) or 0, nil, false
  end
  if locked == -1 or locked > now then
    return nil, locked, false
  end
  return 0, nil, true
end
-- The lock that the `failures`-th failure in a row sets (`LockoutPolicy::lock_after`): 0 none,
-- -1 until an admin unlocks, else until then (Unix microseconds).
local function lock_after(failures, max, duration, now)
  if max > 0 and failures >= max then
    if duration > 0 then
      return now + duration
    end
    return -1
  end
  return 0
end
