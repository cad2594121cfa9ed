-- The audit trail's one writer (after prelude.lua or policy_prelude.lua, which define
-- `events`, `clock` and ARGV[2], the change's audit stamp): every change appends its events
-- to its own list in the same step, so that there is no change without its event.
-- The stamp: the events the list keeps, their maximum age in milliseconds, then the rest of
-- every event's element as the caller joined it: now (the replica's clock, Unix
-- microseconds), the request id, the acting user, the acting organization, the client address
-- as recorded ("" for none); lines separated by "\n".
-- An event is one element, newest first, its fields joined by "\n" (`store/audit.rs` reads
-- them): its id "<sequence>-<n>" (the change's sequence and the event's place in the change,
-- so ids grow with the user's changes), the kind, the sequence, then the stamp's rest. A
-- list, not a stream: Redis 7.0 gives every new stream a 4 KB node, a list of a few short
-- elements takes a few hundred bytes.
local audit_index = 0
-- What this change wrote, for the caller to carry to the organization's feed (`written()`):
-- the id of the list's newest event before it ('' for an empty list), then its elements.
local audit_written = {}
local audit_kept = 0
-- Appends the event `kind` of the change at `sequence` (`domain::audit` says which), then
-- trims the list to the organization's retention: by count, and by age (a change's sequence
-- is at least Redis's clock in microseconds when it was made).
local function audit(kind, sequence)
  local keep, max_age, rest = string.match(ARGV[2], '^(%d+)\n(%d+)\n(.*)$')
  keep = tonumber(keep)
  audit_index = audit_index + 1
  if audit_index == 1 then
    local head = redis.call('LINDEX', events, 0)
    audit_written[1] = head and string.match(head, '^[^\n]*') or ''
  end
  local element = sequence .. '-' .. audit_index .. '\n' .. kind .. '\n' .. sequence .. '\n' .. rest
  audit_written[audit_index + 1] = element
  local length = redis.call('LPUSH', events, element)
  -- Each call costs the check's path about a microsecond of Redis's time: none when not needed.
  if length > keep then
    redis.call('LTRIM', events, 0, keep - 1)
    length = keep
  end
  local oldest = clock - tonumber(max_age) * 1000
  while length > 1 do
    local last = redis.call('LINDEX', events, -1)
    local made = last and tonumber(string.match(last, '^(%d+)-'))
    if not made or made >= oldest then
      break
    end
    redis.call('RPOP', events)
    length = length - 1
  end
  audit_kept = length
end
-- The events this change wrote, as a reply's last element: {before, element…} (see
-- `audit_written`); {} when it wrote none, or when the list's retention (a count below the
-- change's events) trimmed some of them: the feed must hold only what the list does. The
-- organization's feed appends them without reading the list again while its mark of this
-- list is `before` (feed_append.lua).
local function written()
  if audit_kept < audit_index then
    return {}
  end
  return audit_written
end
