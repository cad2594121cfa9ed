-- Puts dead letters back to be tried: each taken off the list and scheduled at once, with a
-- new retry period (the caller made the new members).
-- KEYS[1]  the dead letters; KEYS[2] the retry set; KEYS[3] the set by first failure
-- ARGV[1]  now (Unix microseconds)
-- ARGV[2…] pairs: the dead letter as listed, the delivery to schedule
-- Returns  how many were put back
local moved = 0
for index = 2, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], 1, ARGV[index]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[index + 1])
    redis.call('ZADD', KEYS[3], ARGV[1], ARGV[index + 1])
    moved = moved + 1
  end
end
return moved
