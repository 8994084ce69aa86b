-- Delete one subscription of (project, queue), expired or not, with its deliveries.
-- KEYS: the four of every script, then the subscription's B:s:<id> and B:ds:<id> and the
--       queue's B:qs: and B:qu: keys.
-- ARGV: B, project, queue, id
-- Returns 1 when it existed, 0 otherwise.

local f = redis.call('HMGET', KEYS[5], 'project', 'queue')
if f[1] ~= ARGV[2] or f[2] ~= ARGV[3] then
    return 0
end
remove_subscription(ARGV[4], {s = KEYS[5], ds = KEYS[6], qs = KEYS[7], qu = KEYS[8]})
return 1
