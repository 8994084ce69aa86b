-- Delete every subscription of (project, queue) with their deliveries.
-- ARGV: P, project, queue
-- Returns how many subscriptions were removed.

local qs = qs_key(ARGV[2], ARGV[3])
local ids = redis.call('ZRANGE', qs, 0, -1)
for _, id in ipairs(ids) do
    remove_subscription(id)
end
redis.call('DEL', qs, qu_key(ARGV[2], ARGV[3]))
return #ids
