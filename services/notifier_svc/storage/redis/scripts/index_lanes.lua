-- Put pending deliveries that are in no lane (stored before lanes existed) into their
-- subscriber's lane; run at open. Cheap when every delivery has a lane already.
-- KEYS: the four of every script.
-- ARGV: B
-- Returns how many deliveries were put in a lane.

if redis.call('ZCARD', LANES) > 0 or redis.call('ZCARD', DUE) == 0 then
    return 0
end
local due = redis.call('ZRANGE', DUE, 0, -1, 'WITHSCORES')
for i = 1, #due, 2 do
    local subscriber = redis.call('HGET', dkey(due[i]), 'subscriber')
    if subscriber then
        schedule(subscriber, due[i], due[i + 1])
    else
        redis.call('ZREM', DUE, due[i])
    end
end
return #due / 2
