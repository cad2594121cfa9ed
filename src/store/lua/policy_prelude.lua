-- The start of every script over an organization's policies (`redis/mod.rs` puts it,
-- feed.lua and audit.lua before write_policy.lua and seed_policy.lua): the deadline and the
-- format, as prelude.lua has them for a user's hash, and the end every change shares.
-- KEYS[1]  the organization's policies, "<prefix>:{policies}:org:<org>"
-- KEYS[2]  the change counter (the epoch), "<prefix>:{policies}:epoch"
-- KEYS[3]  the change index, "<prefix>:{policies}:changes": organization -> epoch of its last change
--          (all three share the hash tag {policies}: one slot, so a change and its index entry
--          are one atomic step, also on Redis Cluster)
-- KEYS[4]  the organization's policy events, "<prefix>:{policies}:events:<org>" (a list)
-- KEYS[5]  on one Redis server only: the organization's feed, and KEYS[6] its marks (as
--          prelude.lua's KEYS[3] and KEYS[4])
-- ARGV[1]  the request's deadline in Redis's clock, Unix microseconds
-- ARGV[2]  the change's audit stamp (its fields: audit.lua)
-- Defines  key; feed and copied (nil under Redis Cluster); clock; sequence, the
--          organization's last policy sequence; changed(org), which ends a change: the next
--          sequence and the organization noted under a new epoch;
--          events, the list that audit.lua's audit(kind, sequence) appends to
-- Returns  {"late"} | {"format", version}, or goes on with the body
local key = KEYS[1]
local events = KEYS[4]
local feed, copied = KEYS[5], KEYS[6]
local time = redis.call('TIME')
local clock = tonumber(time[1]) * 1000000 + tonumber(time[2])
if clock > tonumber(ARGV[1]) then
  return {'late'}
end
local version = tonumber(redis.call('HGET', key, 'v')) or 1
if version > 1 then
  return {'format', version}
end
local sequence = tonumber(redis.call('HGET', key, 'q')) or 0
local function changed(org)
  sequence = math.max(sequence + 1, clock)
  redis.call('HSET', key, 'v', 1, 'q', string.format('%d', sequence))
  local epoch = redis.call('INCR', KEYS[2])
  redis.call('ZADD', KEYS[3], epoch, org)
  return sequence
end
-- Sets a part with its dates: created the first time, changed every time.
local function set_part(part, form, now)
  if redis.call('HEXISTS', key, part) == 0 then
    redis.call('HSET', key, part .. '.c', now)
  end
  redis.call('HSET', key, part, form, part .. '.m', now)
end
