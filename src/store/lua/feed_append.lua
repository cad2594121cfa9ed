-- Appends a source's events to its organization's feed past the mark of how far the feed
-- copied that source, and moves the mark, in one step: each event reaches the feed once and
-- in its source's order, however many replicas copy and however often (`store/audit.rs`).
-- KEYS[1]  the feed, "<prefix>:audit:{<org>}" (a stream)
-- KEYS[2]  how far each source was copied, "<prefix>:audit:{<org>}:copied" (a hash; the same
--          hash tag)
-- ARGV[1]  the source's field in KEYS[2]: "u:<user>", or "p" for the organization's own
-- ARGV[2]  the user ("" for the organization's own events)
-- ARGV[3]  the events the feed keeps
-- ARGV[4]  their maximum age, milliseconds
-- ARGV[5…] per event, in the source's order: its id in the source, the number of its fields,
--          then each field's name and value
-- Returns  how many events were appended
local function parse(id)
  local ms, n = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(n)
end
local function after(id, mark)
  local ms, n = parse(id)
  local mark_ms, mark_n = parse(mark)
  return ms > mark_ms or (ms == mark_ms and n > mark_n)
end
local mark = redis.call('HGET', KEYS[2], ARGV[1]) or '0-0'
local appended = 0
local index = 5
while index <= #ARGV do
  local id = ARGV[index]
  local count = tonumber(ARGV[index + 1])
  if after(id, mark) then
    local entry = {'XADD', KEYS[1], 'MAXLEN', ARGV[3], '*', 'src', id}
    if ARGV[2] ~= '' then
      entry[#entry + 1] = 'u'
      entry[#entry + 1] = ARGV[2]
    end
    for field = index + 2, index + 1 + 2 * count do
      entry[#entry + 1] = ARGV[field]
    end
    redis.call(unpack(entry))
    mark = id
    appended = appended + 1
  end
  index = index + 2 + 2 * count
end
if appended > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], mark)
  local time = redis.call('TIME')
  local oldest = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) - tonumber(ARGV[4])
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d', oldest))
end
return appended
