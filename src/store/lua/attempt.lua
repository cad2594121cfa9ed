-- Commits one code attempt (enrollment verify or login check) atomically: state, lock,
-- replay marker and failure count are all checked and changed here, never from the client.
-- The rule is the domain's: this is a transcription of `decide_attempt` and
-- `FactorRecord::apply` (src/domain/factor.rs), step for step, and tests/api/differential.rs
-- replays random histories on both and demands the same verdicts and the same records.
-- (After prelude.lua: key, clock, audit(); ARGV[1] is the deadline, ARGV[2] the audit stamp.)
-- ARGV[3]  factor id the code was checked against
-- ARGV[4]  required state: 1 (verify an enrollment) or 2 (login check)
-- ARGV[5]  time step the code matched, or -1 for a wrong code
-- ARGV[6]  now (the replica's clock), Unix microseconds: lock expiry and the change date
-- ARGV[7]  failures that lock (0: never)
-- ARGV[8]  lock duration in microseconds (0: until an admin unlocks)
-- ARGV[9]  "1": this connection cannot wait for replicas, so change nothing that must reach
--          them (an acceptance, a new lock) and answer "hold"; the caller sends it again on
--          a connection that waits. "0": commit whatever the attempt decides.
-- Returns  {"ok", sequence, handed on}
--        | {"invalid", failures, lock (0 none, -1 until unlocked, else until), replayed 0|1,
--           handed on}
--          (handed on: the change's events for the organization's feed, audit.lua's
--          `hand_on`)
--        | {"locked", lock} (nothing compared, nothing consumed)
--        | {"absent"} | {"state", actual} | {"stale"} (re-enrolled since it was read)
--        | {"hold"}
local f = redis.call('HMGET', key, 's', 'i', 'f', 'l', 'n', 'u', 'q')
local state = tonumber(f[1])
if not state then
  return {'absent'}
end
if state ~= tonumber(ARGV[4]) then
  return {'state', state}
end
-- Format 2 names the enrollment by its random id, format 1 by its sequence.
if (f[2] or f[3]) ~= ARGV[3] then
  return {'stale'}
end
local now = tonumber(ARGV[6])
local failures, active, expired = lockout_standing(f[5], f[6], now)
if active then
  return {'locked', active}
end
local step = tonumber(ARGV[5])
local last = tonumber(f[4]) or -1
local accepted = step >= 0 and step > last
local lock = 0
if not accepted then
  failures = failures + 1
  lock = lock_after(failures, tonumber(ARGV[7]), tonumber(ARGV[8]), now)
end
if ARGV[9] == '1' and (accepted or lock ~= 0) then
  return {'hold'}
end
local sequence = string.format('%d', math.max(tonumber(f[7]) + 1, clock))
-- The events are `domain::audit::attempt_events`'.
if expired then
  redis.call('HDEL', key, 'u')
  audit('lock_expired', sequence)
end
if accepted then
  redis.call('HSET', key, 's', 2, 'l', ARGV[5], 'n', 0, 'q', sequence, 'm', ARGV[6])
  if state == 1 then
    audit('verified', sequence)
  else
    audit('check_accepted', sequence)
  end
  return {'ok', tonumber(sequence), hand_on()}
end
if lock ~= 0 then
  redis.call('HSET', key, 'u', string.format('%d', lock))
end
redis.call('HSET', key, 'n', failures, 'q', sequence, 'm', ARGV[6])
local replayed = 0
if step >= 0 then replayed = 1 end
if replayed == 1 then
  audit('replay_refused', sequence)
else
  audit('check_invalid', sequence)
end
if lock ~= 0 then
  audit('locked', sequence)
end
return {'invalid', failures, lock, replayed, hand_on()}
