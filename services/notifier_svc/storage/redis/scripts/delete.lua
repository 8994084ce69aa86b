-- Delete one subscription of (project, queue), expired or not, with its deliveries.
-- ARGV: P, project, queue, id
-- Returns 1 when it existed, 0 otherwise.

local f = redis.call('HMGET', skey(ARGV[4]), 'project', 'queue')
if f[1] ~= ARGV[2] or f[2] ~= ARGV[3] then
    return 0
end
remove_subscription(ARGV[4])
return 1
