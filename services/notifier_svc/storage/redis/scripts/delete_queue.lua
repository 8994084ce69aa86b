-- Delete every subscription of (project, queue) with their deliveries.
-- KEYS: the four of every script, then the queue's B:qs: and B:qu: keys.
-- ARGV: B, project, queue
-- Returns how many subscriptions were removed.

local qs, qu = KEYS[5], KEYS[6]
local ids = redis.call('ZRANGE', qs, 0, -1)
for _, id in ipairs(ids) do
    remove_subscription(id, {qs = qs, qu = qu})
end
redis.call('DEL', qs, qu)
return #ids
