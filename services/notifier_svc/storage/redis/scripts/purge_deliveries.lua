-- Drop the pending deliveries of every subscription of (project, queue), expired ones too;
-- the subscriptions stay.
-- KEYS: the four of every script, then the queue's B:qs: key.
-- ARGV: B, project, queue
-- Returns how many deliveries were removed.

local removed = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
    removed = removed + drop_deliveries(ds_key(id))
end
return removed
