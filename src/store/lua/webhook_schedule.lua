-- Schedules a delivery's next try (`store/webhook.rs`), in place of its previous one.
-- KEYS[1]  the retry set, "<prefix>:{webhooks}:retry" (by due time)
-- KEYS[2]  the same deliveries by when they first failed, "<prefix>:{webhooks}:since"
-- ARGV[1]  due (Unix microseconds)
-- ARGV[2]  the delivery (JSON)
-- ARGV[3]  when it first failed (Unix microseconds)
-- ARGV[4]  the previous try's member, or "" for a first failure
if ARGV[4] ~= '' then
  redis.call('ZREM', KEYS[1], ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[4])
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
return 1
