-- Seals an enrollment's secret anew under the key ring's first key (`tessera rekey`), if the
-- record still holds the sealed secret that was read: an enrollment, a removal or another
-- rekey in between leaves it alone. Nothing else changes: not the sequence, not the dates
-- (the factor is the same factor, its secret the same secret).
-- (After prelude.lua: key, clock; ARGV[1] is the deadline.)
-- ARGV[2]  the sealed secret as read
-- ARGV[3]  the same secret sealed under the first key
-- Returns  {"ok"} | {"changed"}
if redis.call('HGET', key, 'k') ~= ARGV[2] then
  return {'changed'}
end
redis.call('HSET', key, 'k', ARGV[3])
return {'ok'}
