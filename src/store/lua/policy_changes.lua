-- The organizations whose policies changed after an epoch: what every replica asks a few
-- times a second (one read of one slot, whatever the number of organizations).
-- KEYS[1]  the change counter, "<prefix>:{policies}:epoch"
-- KEYS[2]  the change index, "<prefix>:{policies}:changes"
-- ARGV[1]  the epoch the replica saw last
-- Returns  {epoch, org...}: the epoch now (as text), and each organization changed after ARGV[1]
--          (none when the epoch is not past it; an epoch below it means the index was lost)
local epoch = tonumber(redis.call('GET', KEYS[1])) or 0
if epoch <= tonumber(ARGV[1]) then
  return {string.format('%d', epoch)}
end
local reply = {string.format('%d', epoch)}
for _, org in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')) do
  reply[#reply + 1] = org
end
return reply
