-- Remove expired watch entries.
-- ARGV: P, now
-- Returns how many went.

local removed = 0
for _, name in ipairs(redis.call('SMEMBERS', P .. ':wq')) do
    removed = removed + redis.call('ZREMRANGEBYSCORE', watch_key(name), '-inf', ARGV[2])
    forget_if_unwatched(name)
end
return removed
