-- Create a subscription unless a live one of the same subscriber exists.
-- KEYS: the four of every script, then the queue's B:qu: and B:qs: keys and the new
--       subscription's (B:s:<new id>).
-- ARGV: B, project, queue, subscriber, now, new id, ttl, options (JSON), expires, quota (the
--       most live subscriptions the queue may have, '0' = no limit)
-- Returns {1, id, fields} when created, {0, id, fields} when an existing one is returned, -1
-- when it would be new and the queue has the quota's number of live ones (nothing written).

local qu, qs, new = KEYS[5], KEYS[6], KEYS[7]
local project, queue, subscriber, now = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local existing = redis.call('HGET', qu, subscriber)
if existing and live(skey(existing), project, queue, now) then
    return {0, existing, redis.call('HGETALL', skey(existing))}
end
local quota = tonumber(ARGV[10])
if quota > 0 and redis.call('ZCARD', qs) >= quota then
    -- Some may have expired and not be swept yet: count the live ones (the quota bounds them,
    -- and the sweep bounds the others).
    local alive = 0
    for _, id in ipairs(redis.call('ZRANGE', qs, 0, -1)) do
        if live(skey(id), project, queue, now) then
            alive = alive + 1
        end
    end
    if alive >= quota then
        return -1
    end
end
if existing then
    remove_subscription(existing, {qs = qs, qu = qu})
    redis.call('HDEL', qu, subscriber)
end
local id = ARGV[6]
redis.call('HSET', new, 'project', project, 'queue', queue, 'subscriber', subscriber,
    'ttl', ARGV[7], 'options', ARGV[8], 'confirmed', '0', 'created', ARGV[5],
    'expires', ARGV[9])
redis.call('ZADD', qs, 0, id)
redis.call('HSET', qu, subscriber, id)
redis.call('ZADD', EXP, ARGV[9], id)
return {1, id, redis.call('HGETALL', new)}
