-- (After feed.lua, whose rule it applies.) Appends sources' events to their organization's
-- feed, each source's past the mark of how far the feed copied it, and moves each mark, in one
-- step: each event reaches the feed once and in its source's order, however many replicas copy
-- and however often (`store/audit.rs`). One call takes many sources of the organization: the
-- copier gathers them (`tenant::audit_feed`).
-- KEYS[1]  the feed, "<prefix>:audit:{<org>}" (a stream)
-- KEYS[2]  how far each source was copied, "<prefix>:audit:{<org>}:copied" (a hash; the same
--          hash tag)
-- ARGV[1]  the events the feed keeps
-- ARGV[2]  their maximum age, milliseconds
-- ARGV[3…] per source: its field in KEYS[2] ("u:<user>", or "p" for the organization's own),
--          the user ("" for the organization's own events), where its events come from, the
--          number of its events; then per event, in the source's order: its id in the source,
--          the number of its fields, then each field's name and value.
--          Where they come from: "*", read from the source past the feed's mark (each is
--          appended if it lies past the mark); or the id of the event before them in the
--          source ("" for none), when a change carried the events it wrote: they are
--          appended only while the feed's mark is that id (or one of theirs), for else the
--          feed lacks events between its mark and them.
-- Returns  {appended, field…}: how many events were appended, and the fields of the sources
--          whose carried events were not contiguous with the mark (nothing of theirs was
--          appended: the caller reads them from the source instead)
local appended = 0
-- The reply: its first element is set last.
local reply = {0}
local index = 3
while index <= #ARGV do
  local field, user, before, count = ARGV[index], ARGV[index + 1], ARGV[index + 2],
    tonumber(ARGV[index + 3])
  index = index + 4
  local mark = feed_mark(KEYS[2], field)
  -- Each event: {id, fields}, as feed.lua's `feed_append_past` takes them.
  local given = {}
  for event = 1, count do
    local fields = {}
    for value = index + 2, index + 1 + 2 * tonumber(ARGV[index + 1]) do
      fields[#fields + 1] = ARGV[value]
    end
    given[event] = {ARGV[index], fields}
    index = index + 2 + 2 * tonumber(ARGV[index + 1])
  end
  -- Carried events follow the mark (appended), or lie behind it (copied already: nothing to
  -- append), or there is a gap.
  local gap = false
  if before ~= '*' and mark ~= before and not (before == '' and mark == '0-0') then
    gap = count > 0 and feed_past(given[count][1], mark)
    for event = 1, count do
      if given[event][1] == mark then
        gap = false
      end
    end
  end
  if gap then
    reply[#reply + 1] = field
  else
    -- Only the events past the mark as it moves: a source read a page at a time while it
    -- grows may give an event twice.
    appended = appended + feed_append_past(KEYS[1], KEYS[2], field, user, mark, given)
  end
end
-- Trimmed once for all the appends: XADD's exact MAXLEN trims on every entry, and cost
-- Redis 6.3 µs an entry against 1.3 without it (BENCHMARKS, "The audit feed's copier").
if appended > 0 then
  local time = redis.call('TIME')
  feed_trim(KEYS[1], tonumber(ARGV[1]),
    tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) - tonumber(ARGV[2]))
end
reply[1] = appended
return reply
