-- Commits one code attempt (enrollment verify or login check) atomically: state, lock,
-- replay marker and failure count are all checked and changed here, never from the client.
-- KEYS[1]  the user's factor hash
-- ARGV[1]  factor id the code was checked against
-- ARGV[2]  required state: 1 (verify an enrollment) or 2 (login check)
-- ARGV[3]  time step the code matched, or -1 for a wrong code
-- ARGV[4]  now, Unix microseconds
-- ARGV[5]  failures that lock (0: never)
-- ARGV[6]  lock duration in microseconds (0: until an admin unlocks)
-- Returns  {"ok", sequence}
--        | {"invalid", failures, lock (0 none, -1 until unlocked, else until), replayed 0|1}
--        | {"locked", lock} (nothing compared, nothing consumed)
--        | {"absent"} | {"state", actual} | {"stale"} (re-enrolled since it was read)
local key = KEYS[1]
local f = redis.call('HMGET', key, 's', 'f', 'l', 'n', 'u', 'q')
local state = tonumber(f[1])
if not state then
  return {'absent'}
end
if state ~= tonumber(ARGV[2]) then
  return {'state', state}
end
if tonumber(f[2]) ~= tonumber(ARGV[1]) then
  return {'stale'}
end
local now = tonumber(ARGV[4])
local failures = tonumber(f[4]) or 0
local locked = tonumber(f[5])
if locked then
  if locked == -1 or locked > now then
    return {'locked', locked}
  end
  -- An expired lock starts a fresh count.
  failures = 0
  redis.call('HDEL', key, 'u')
end
local sequence = tonumber(f[6]) + 1
local step = tonumber(ARGV[3])
local last = tonumber(f[3]) or -1
if step >= 0 and step > last then
  redis.call('HSET', key, 's', 2, 'l', ARGV[3], 'n', 0, 'q', sequence, 'm', ARGV[4])
  return {'ok', sequence}
end
failures = failures + 1
local max = tonumber(ARGV[5])
local lock = 0
if max > 0 and failures >= max then
  local duration = tonumber(ARGV[6])
  if duration > 0 then lock = now + duration else lock = -1 end
  redis.call('HSET', key, 'u', string.format('%d', lock))
end
redis.call('HSET', key, 'n', failures, 'q', sequence, 'm', ARGV[4])
local replayed = 0
if step >= 0 then replayed = 1 end
return {'invalid', failures, lock, replayed}
