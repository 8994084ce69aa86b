-- Remove a replica's watch entries: of the given queues, or of every queue.
-- ARGV: P, replica, then project, queue pairs (none: every queue)

local replica = ARGV[2]
local names = {}
if #ARGV > 2 then
    for i = 3, #ARGV, 2 do
        names[#names + 1] = watched_name(ARGV[i], ARGV[i + 1])
    end
else
    names = redis.call('SMEMBERS', P .. ':wq')
end
for _, name in ipairs(names) do
    redis.call('ZREM', watch_key(name), replica)
    forget_if_unwatched(name)
end
return #names
