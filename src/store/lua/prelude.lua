-- The start of every script: each is this prelude followed by its body (`redis/mod.rs`
-- assembles them), so the two rules that hold for every change live here once:
--   the deadline: a script that starts after its request's deadline changes nothing (its
--     request has already been answered UNAVAILABLE);
--   the format: a record of a newer format than this release writes is left alone.
-- KEYS[1]  the user's hash, "<prefix>:{<org>:<user>}"
-- ARGV[1]  the request's deadline in Redis's clock, Unix microseconds
-- Defines  key; clock, Redis's time in microseconds (it also floors the sequences)
-- Returns  {"late"} | {"format", version}, or goes on with the body
local key = KEYS[1]
local time = redis.call('TIME')
local clock = tonumber(time[1]) * 1000000 + tonumber(time[2])
if clock > tonumber(ARGV[1]) then
  return {'late'}
end
local version = tonumber(redis.call('HGET', key, 'v')) or 1
if version > 2 then
  return {'format', version}
end
