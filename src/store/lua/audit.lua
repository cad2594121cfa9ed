-- The audit trail's one writer (after prelude.lua or policy_prelude.lua, which define
-- `events`, `feed`, `copied`, `clock` and ARGV[2], the change's audit stamp, and after
-- feed.lua): every change appends its events to its own list in the same step, so that there
-- is no change without its event, and hands them on to the organization's feed (`hand_on`).
-- The stamp: the events the list keeps, their maximum age in milliseconds, the events the
-- organization's feed keeps, the list's user ("" for the organization's own events), then the
-- rest of every event's element as the caller joined it: now (the replica's clock, Unix
-- microseconds), the request id, the acting user, the acting organization, the client address
-- as recorded ("" for none); lines separated by "\n".
-- An event is one element, newest first, its fields joined by "\n" (`store/audit.rs` reads
-- them): its id "<sequence>-<n>" (the change's sequence and the event's place in the change,
-- so ids grow with the user's changes), the kind, the sequence, then the stamp's rest. A
-- list, not a stream: Redis 7.0 gives every new stream a 4 KB node, a list of a few short
-- elements takes a few hundred bytes.
local audit_keep, audit_max_age, feed_keep, feed_user, audit_rest =
  string.match(ARGV[2], '^(%d+)\n(%d+)\n(%d+)\n([^\n]*)\n(.*)$')
audit_keep, audit_max_age, feed_keep = tonumber(audit_keep), tonumber(audit_max_age),
  tonumber(feed_keep)
local audit_index = 0
-- What this change wrote, for the organization's feed (`hand_on`): the id of the list's
-- newest event before it ('' for an empty list), then its elements.
local audit_written = {}
local audit_kept = 0
-- Appends the event `kind` of the change at `sequence` (`domain::audit` says which), then
-- trims the list to the organization's retention: by count, and by age (a change's sequence
-- is at least Redis's clock in microseconds when it was made).
local function audit(kind, sequence)
  audit_index = audit_index + 1
  if audit_index == 1 then
    local head = redis.call('LINDEX', events, 0)
    audit_written[1] = head and string.match(head, '^[^\n]*') or ''
  end
  local element = sequence .. '-' .. audit_index .. '\n' .. kind .. '\n' .. sequence .. '\n'
    .. audit_rest
  audit_written[audit_index + 1] = element
  local length = redis.call('LPUSH', events, element)
  -- Each call costs the check's path about a microsecond of Redis's time: none when not needed.
  if length > audit_keep then
    redis.call('LTRIM', events, 0, audit_keep - 1)
    length = audit_keep
  end
  local oldest = clock - audit_max_age * 1000
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
-- The feed's fields of an event's element (`event_of_entry`, then `feed_fields`, in
-- `store/audit.rs`): {id, {"t", kind, "q", sequence, "at", now, "rid", request id, "by",
-- acting user, "bo", acting organization[, "ip", address]}}; nil for an element that does not
-- read back.
local function feed_event(element)
  local id, kind, sequence, at, request, user, org, address = string.match(element,
    '^(%d+%-%d+)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)$')
  if not id then
    return nil
  end
  local fields = {'t', kind, 'q', sequence, 'at', at, 'rid', request, 'by', user, 'bo', org}
  if address ~= '' then
    fields[#fields + 1] = 'ip'
    fields[#fields + 1] = address
  end
  return {id, fields}
end
-- The events this change wrote, handed on to the organization's feed: the last element of
-- the change's reply (`store/redis/reply.rs`), which the body ends with.
-- On one Redis server the store gives the feed's keys (`feed` and `copied`), and the change
-- appends its events to the feed itself, in this same step (feed.lua's rule), so that the feed
-- holds every change in the order Redis made them, and answers "fed". Under Redis Cluster
-- the feed lies in another slot, out of this script's reach: the answer is {before,
-- element…} (see `audit_written`) for the copier to carry, or {} when the change wrote none
-- or the list's retention (a count below the change's events) trimmed some of them (the feed
-- must hold only what the list does); feed_append.lua appends them without reading the list
-- again while its mark of this list is `before`. {} also when the feed cannot take them here
-- (an element or a mark that does not read back): the copier then reads the list, and
-- reports what does not read back; a script that failed here would keep its change (Redis
-- does not undo a script's writes) but answer an error.
local function hand_on()
  if not feed then
    if audit_kept < audit_index then
      return {}
    end
    return audit_written
  end
  if audit_index == 0 then
    return 'fed'
  end
  local field = 'p'
  if feed_user ~= '' then
    field = 'u:' .. feed_user
  end
  local mark = feed_mark(copied, field)
  if not feed_id_parts(mark) then
    return {}
  end
  local before = audit_written[1]
  local elements = {}
  if audit_kept >= audit_index and (mark == before or (before == '' and mark == '0-0')) then
    for index = 2, #audit_written do
      elements[#elements + 1] = audit_written[index]
    end
  else
    -- The feed lacks some of this list's earlier events (a change of a release that left
    -- them to the copier, which has not copied them yet), or the list trimmed some of this
    -- change's: the feed takes what the list holds past its mark, oldest first.
    local held = redis.call('LRANGE', events, 0, -1)
    for index = #held, 1, -1 do
      elements[#elements + 1] = held[index]
    end
  end
  local fed = {}
  for index, element in ipairs(elements) do
    fed[index] = feed_event(element)
    if not fed[index] then
      return {}
    end
  end
  if feed_append_past(feed, copied, field, feed_user, mark, fed) > 0 then
    feed_trim(feed, feed_keep, math.floor(clock / 1000) - audit_max_age)
  end
  return 'fed'
end
