-- Remove up to `budget` expired subscriptions with their deliveries.
-- ARGV: P, now, budget
-- Returns {items removed, subscriptions examined}; examined == budget means: call again.

local ids = redis.call('ZRANGEBYSCORE', P .. ':exp', '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local removed = 0
for _, id in ipairs(ids) do
    removed = removed + remove_subscription(id)
end
return {removed, #ids}
