-- The organization's feed: how events are appended to it, in one place for both paths that
-- append (`store/audit.rs`): the copier's feed_append.lua, and on one Redis server a change's
-- own script (audit.lua's `hand_on`). Each source's events are appended past the feed's mark
-- of that source, in the source's order, and the mark moves with them in the same step, so
-- that each event reaches the feed once and in order, whichever path appends it first and
-- however often the other tries again.
-- The feed: a stream; each entry is one event, its fields "src" (its id in its source), "u"
-- (its user; none for the organization's own events), then the event's (`feed_fields` in
-- `store/audit.rs`). Its marks: a hash of the same hash tag, "u:<user>" or "p" to the id of
-- the source's last event appended.
local function feed_id_parts(id)
  local ms, n = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(n)
end
-- Whether the event `id` comes after `mark` in its source.
local function feed_past(id, mark)
  local ms, n = feed_id_parts(id)
  local mark_ms, mark_n = feed_id_parts(mark)
  return ms > mark_ms or (ms == mark_ms and n > mark_n)
end
-- The feed's mark of the source `field`: the id of its last event appended ("0-0": none).
local function feed_mark(copied, field)
  return redis.call('HGET', copied, field) or '0-0'
end
-- Appends the events of `events` that lie past `mark` (each {id, fields}, in the source's
-- order; fields: the event's own, each name then value) of the source `field` of `user`
-- ('' for the organization's own events) to `feed`, and moves the source's mark in `copied`
-- to the last one. Returns how many it appended.
local function feed_append_past(feed, copied, field, user, mark, events)
  local appended = 0
  for _, event in ipairs(events) do
    local id, fields = event[1], event[2]
    if feed_past(id, mark) then
      if user ~= '' then
        redis.call('XADD', feed, '*', 'src', id, 'u', user, unpack(fields))
      else
        redis.call('XADD', feed, '*', 'src', id, unpack(fields))
      end
      mark = id
      appended = appended + 1
    end
  end
  if appended > 0 then
    redis.call('HSET', copied, field, mark)
  end
  return appended
end
-- Trims the feed to the organization's retention after appends: its newest `keep` events,
-- none older than `oldest` (Unix milliseconds). By count in steps: once the feed holds more
-- than `keep` and a thousandth (at most 100 more), it goes back to exactly `keep`. A trim
-- that removes entries from inside a stream's node walks that node, about 3.3 µs of Redis
-- whether it removes one entry or a node's worth (BENCHMARKS, "How, 2026-12-07
-- (afternoon)"), and with the feed full every check's script would pay it. Below 1,000
-- kept, the trim is exact.
local function feed_trim(feed, keep, oldest)
  if redis.call('XLEN', feed) > keep + math.min(100, math.floor(keep / 1000)) then
    redis.call('XTRIM', feed, 'MAXLEN', keep)
  end
  redis.call('XTRIM', feed, 'MINID', string.format('%d', oldest))
end
