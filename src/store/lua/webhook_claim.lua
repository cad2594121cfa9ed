-- Claims due deliveries: each one's due time moves a lease ahead, so that no other replica
-- takes it meanwhile, and a replica that dies with it leaves it to another after the lease.
-- KEYS[1]  the retry set, "<prefix>:{webhooks}:retry"
-- ARGV[1]  now (Unix microseconds)
-- ARGV[2]  the lease's end (Unix microseconds)
-- ARGV[3]  how many at most
-- Returns  the claimed deliveries (JSON)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], member)
end
return due
