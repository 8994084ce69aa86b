-- Put pending deliveries that are in no lane (stored before lanes existed) into their
-- subscriber's lane; run at open. Cheap when every delivery has a lane already.
-- ARGV: P
-- Returns how many deliveries were put in a lane.

if redis.call('ZCARD', P .. ':lanes') > 0 or redis.call('ZCARD', P .. ':due') == 0 then
    return 0
end
local due = redis.call('ZRANGE', P .. ':due', 0, -1, 'WITHSCORES')
for i = 1, #due, 2 do
    local subscriber = redis.call('HGET', P .. ':d:' .. due[i], 'subscriber')
    if subscriber then
        schedule(subscriber, due[i], due[i + 1])
    else
        redis.call('ZREM', P .. ':due', due[i])
    end
end
return #due / 2
