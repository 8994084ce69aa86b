-- Record a failed attempt of a delivery that still exists (and, when `leased` is given, is
-- still under that lease: its due time is `leased`).
-- KEYS: the four of every script, then the delivery (B:d:<id>).
-- ARGV: B, id, due, attempts, leased ('' = any)
-- Returns 1 when rescheduled, 0 when the delivery is gone or its lease is another's.

local key = KEYS[5]
local subscriber = redis.call('HGET', key, 'subscriber')
if not subscriber then
    return 0
end
if ARGV[5] ~= '' then
    local due = redis.call('ZSCORE', DUE, ARGV[2])
    if not due or tonumber(due) ~= tonumber(ARGV[5]) then
        return 0
    end
end
redis.call('HSET', key, 'attempts', ARGV[4])
schedule(subscriber, ARGV[2], ARGV[3])
return 1
