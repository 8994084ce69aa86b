-- Remove a replica's watch entries: of the given queues, or of every queue.
-- KEYS: the four of every script, then the B:w: key of each given queue.
-- ARGV: B, replica, then project, queue pairs (none: every queue)

local replica = ARGV[2]
local names, keys = {}, {}
if #ARGV > 2 then
    for i = 3, #ARGV, 2 do
        names[#names + 1] = watched_name(ARGV[i], ARGV[i + 1])
        keys[#keys + 1] = KEYS[4 + #names]
    end
else
    names = redis.call('SMEMBERS', WQ)
end
for n, name in ipairs(names) do
    local key = keys[n] or watch_key(name)
    redis.call('ZREM', key, replica)
    forget_if_unwatched(name, key)
end
return #names
