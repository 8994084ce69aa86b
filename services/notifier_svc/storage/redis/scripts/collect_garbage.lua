-- Remove up to `budget` expired subscriptions with their deliveries.
-- KEYS: the four of every script.
-- ARGV: B, now, budget
-- Returns {items removed, subscriptions examined}; examined == budget means: call again.

local ids = redis.call('ZRANGEBYSCORE', EXP, '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local removed = 0
for _, id in ipairs(ids) do
    removed = removed + remove_subscription(id)
end
return {removed, #ids}
