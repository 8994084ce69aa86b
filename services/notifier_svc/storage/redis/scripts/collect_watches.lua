-- Remove expired watch entries, and trim the watch feed to the entries of the last
-- `retention` seconds by the server's clock (whose time the entries' ids are).
-- KEYS: the four of every script, then the feed (B:wf).
-- ARGV: B, now, retention (whole milliseconds)
-- Returns how many watch entries went.

local removed = 0
for _, name in ipairs(redis.call('SMEMBERS', WQ)) do
    removed = removed + redis.call('ZREMRANGEBYSCORE', watch_key(name), '-inf', ARGV[2])
    forget_if_unwatched(name)
end
local clock = redis.call('TIME')
local oldest = math.max(0, tonumber(clock[1]) * 1000 - tonumber(ARGV[3]))
redis.call('XTRIM', KEYS[5], 'MINID', '~', string.format('%d-0', oldest))
return removed
