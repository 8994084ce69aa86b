-- Record that a replica has watchers of queues, until `expires`.
-- KEYS: the four of every script, then the B:w: key of each queue.
-- ARGV: B, replica, now, expires, then project, queue pairs
-- Returns the positions (1-based, among the pairs) of the queues of which the replica had no
-- live entry before.

local replica, now, expires = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local lapsed = {}
local n = 0
for i = 5, #ARGV, 2 do
    n = n + 1
    local name = watched_name(ARGV[i], ARGV[i + 1])
    local key = KEYS[4 + n]
    local old = redis.call('ZSCORE', key, replica)
    if not old or tonumber(old) <= now then
        lapsed[#lapsed + 1] = n
    end
    redis.call('ZADD', key, expires, replica)
    redis.call('SADD', WQ, name)
end
return lapsed
