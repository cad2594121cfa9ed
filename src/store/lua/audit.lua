-- The audit trail's one writer (after prelude.lua or policy_prelude.lua, which define
-- `events`, `clock` and ARGV[2], the change's audit stamp): every change appends its events
-- to its own list in the same step, so that there is no change without its event.
-- The stamp's fields, each ended by "\n": now (the replica's clock, Unix microseconds), the
-- request id, the acting user, the acting organization, the client address as recorded (""
-- for none), the events the list keeps, and their maximum age in milliseconds.
-- An event is one element, newest first, its fields joined by "\n" (`store/audit.rs` reads
-- them): its id "<sequence>-<n>" (the change's sequence and the event's place in the change,
-- so ids grow with the user's changes), the kind, the sequence, now, the request id, the
-- acting user and organization, the address. A list, not a stream: Redis 7.0 gives every new
-- stream a 4 KB node, a list of a few short elements takes a few hundred bytes.
local audit_index = 0
-- Appends the event `kind` of the change at `sequence` (`domain::audit` says which), then
-- trims the list to the organization's retention: by count, and by age (a change's sequence
-- is at least Redis's clock in microseconds when it was made).
local function audit(kind, sequence)
  local stamp = {}
  for field in string.gmatch(ARGV[2], '([^\n]*)\n') do
    stamp[#stamp + 1] = field
  end
  audit_index = audit_index + 1
  local id = sequence .. '-' .. audit_index
  redis.call('LPUSH', events, table.concat({id, kind, sequence, stamp[1], stamp[2], stamp[3],
    stamp[4], stamp[5]}, '\n'))
  redis.call('LTRIM', events, 0, tonumber(stamp[6]) - 1)
  local oldest = clock - tonumber(stamp[7]) * 1000
  while true do
    local last = redis.call('LINDEX', events, -1)
    local made = last and tonumber(string.match(last, '^(%d+)-'))
    if not made or made >= oldest then
      break
    end
    redis.call('RPOP', events)
  end
end
