-- Gives up a delivery: out of the retry sets, onto its organization's dead letters (newest
-- first, the newest ARGV[2] kept).
-- KEYS[1]  the retry set; KEYS[2] the set by first failure; KEYS[3] the dead letters
-- ARGV[1]  the delivery (JSON)
-- ARGV[2]  how many dead letters to keep
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('LPUSH', KEYS[3], ARGV[1])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[2]) - 1)
return 1
