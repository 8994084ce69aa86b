-- Lease due deliveries lane by lane (a lane = one subscriber's deliveries), earliest due lane
-- first: at most `limit` in all and per subscriber `per_subscriber` minus its busy count.
-- The work depends on the number of lanes, not on any lane's backlog.
-- KEYS: the four of every script.
-- ARGV: B, now, until, limit, per_subscriber, then subscriber, busy count pairs
-- Returns {id, due before the lease, fields, ...} of the deliveries leased.

local now, lease_end = tonumber(ARGV[2]), ARGV[3]
local left, per_subscriber = tonumber(ARGV[4]), tonumber(ARGV[5])
local busy = {}
for i = 6, #ARGV, 2 do
    busy[ARGV[i]] = tonumber(ARGV[i + 1])
end
local result, touched = {}, {}
local offset = 0
while left > 0 do
    local lanes = redis.call('ZRANGEBYSCORE', LANES, '-inf', now, 'LIMIT', offset, 100)
    if #lanes == 0 then
        break
    end
    offset = offset + #lanes
    for _, subscriber in ipairs(lanes) do
        local room = math.min(left, per_subscriber - (busy[subscriber] or 0))
        if room > 0 then
            local due = redis.call('ZRANGEBYSCORE', lane(subscriber), '-inf', now, 'WITHSCORES',
                'LIMIT', 0, room)
            for j = 1, #due, 2 do
                local id = due[j]
                local fields = redis.call('HGETALL', dkey(id))
                if #fields > 0 then
                    redis.call('ZADD', DUE, lease_end, id)
                    redis.call('ZADD', lane(subscriber), lease_end, id)
                    result[#result + 1] = id
                    result[#result + 1] = due[j + 1]
                    result[#result + 1] = fields
                    left = left - 1
                else
                    redis.call('ZREM', DUE, id)
                    redis.call('ZREM', lane(subscriber), id)
                end
            end
            touched[#touched + 1] = subscriber
        end
        if left <= 0 then
            break
        end
    end
end
-- Lane scores change only now, so that the paging above saw a stable B:lanes.
for _, subscriber in ipairs(touched) do
    refresh_lane(subscriber)
end
return result
