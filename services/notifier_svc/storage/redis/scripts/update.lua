-- Change fields of a live subscription; '' means unchanged.
-- KEYS: the four of every script, then the subscription's B:s:<id> and the queue's B:qu: key.
-- ARGV: B, project, queue, id, now, subscriber, ttl, expires, options (JSON), confirmed
-- Returns {1, fields}, {-1} when there is no such live subscription, {-2} when another live
-- subscription of the queue has the new subscriber.

local key, qu = KEYS[5], KEYS[6]
local project, queue, id, now = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if not live(key, project, queue, now) then
    return {-1}
end
local subscriber = ARGV[6]
if subscriber ~= '' then
    local old = redis.call('HGET', key, 'subscriber')
    if subscriber ~= old then
        local other = redis.call('HGET', qu, subscriber)
        if other and other ~= id then
            if live(skey(other), project, queue, now) then
                return {-2}
            end
            remove_subscription(other, {qu = qu})
        end
        if redis.call('HGET', qu, old) == id then
            redis.call('HDEL', qu, old)
        end
        redis.call('HSET', qu, subscriber, id)
        redis.call('HSET', key, 'subscriber', subscriber)
    end
end
if ARGV[7] ~= '' then
    redis.call('HSET', key, 'ttl', ARGV[7], 'expires', ARGV[8])
    redis.call('ZADD', EXP, ARGV[8], id)
end
if ARGV[9] ~= '' then
    redis.call('HSET', key, 'options', ARGV[9])
end
if ARGV[10] ~= '' then
    redis.call('HSET', key, 'confirmed', ARGV[10])
end
return {1, redis.call('HGETALL', key)}
