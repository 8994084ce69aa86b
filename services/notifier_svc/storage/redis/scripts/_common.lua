-- Helpers shared by every script of the notifier store (prepended to each one).
--
-- Key layout, P being the URI's prefix option (ARGV[1] of every script):
--   P:s:<id>                 hash   a subscription: project, queue, subscriber, ttl, options,
--                                   confirmed ('0'/'1'), created, expires
--   P:qs:<queue>:<project>   zset   the queue's subscription ids, score 0 (ordered by id)
--   P:qu:<queue>:<project>   hash   subscriber -> subscription id (uniqueness)
--   P:exp                    zset   subscription id -> expires (expiry sweep)
--   P:d:<id>                 hash   a pending delivery: subscription_id, project, queue,
--                                   subscriber, options, kind, document, attempts, created
--   P:due                    zset   delivery id -> due time
--   P:ld:<subscriber>        zset   the subscriber's lane: its delivery ids -> due time
--   P:lanes                  zset   subscriber -> earliest due time in its lane (lanes with
--                                   pending deliveries only)
--   P:ds:<subscription id>   set    the subscription's pending delivery ids
--   P:w:<queue>:<project>    zset   replica id -> expiry of its entry (replicas watching)
--   P:wq                     set    '<queue>:<project>' of every queue in a P:w: key
--   P:wf                     stream the watch feed (written by the store's Python code)
-- Queue names never contain ':', so <queue>:<project> is unambiguous.

local P = ARGV[1]

local function skey(id)
    return P .. ':s:' .. id
end

local function qs_key(project, queue)
    return P .. ':qs:' .. queue .. ':' .. project
end

local function qu_key(project, queue)
    return P .. ':qu:' .. queue .. ':' .. project
end

local function lane(subscriber)
    return P .. ':ld:' .. subscriber
end

-- Keep the lane's score in P:lanes equal to its earliest due time.
local function refresh_lane(subscriber)
    local first = redis.call('ZRANGE', lane(subscriber), 0, 0, 'WITHSCORES')
    if #first == 0 then
        redis.call('ZREM', P .. ':lanes', subscriber)
    else
        redis.call('ZADD', P .. ':lanes', first[2], subscriber)
    end
end

-- Make delivery `id` of `subscriber` due at `due`.
local function schedule(subscriber, id, due)
    redis.call('ZADD', P .. ':due', due, id)
    redis.call('ZADD', lane(subscriber), due, id)
    refresh_lane(subscriber)
end

local function unschedule(subscriber, id)
    redis.call('ZREM', P .. ':due', id)
    if subscriber then
        redis.call('ZREM', lane(subscriber), id)
        refresh_lane(subscriber)
    end
end

local function drop_deliveries(id)
    local ds = P .. ':ds:' .. id
    local ids = redis.call('SMEMBERS', ds)
    for _, d in ipairs(ids) do
        local subscriber = redis.call('HGET', P .. ':d:' .. d, 'subscriber')
        redis.call('DEL', P .. ':d:' .. d)
        unschedule(subscriber, d)
    end
    redis.call('DEL', ds)
    return #ids
end

-- Remove a subscription, its index entries and its deliveries; how many items went.
local function remove_subscription(id)
    local f = redis.call('HMGET', skey(id), 'project', 'queue', 'subscriber')
    redis.call('ZREM', P .. ':exp', id)
    if not f[1] then
        return drop_deliveries(id)
    end
    redis.call('ZREM', qs_key(f[1], f[2]), id)
    local qu = qu_key(f[1], f[2])
    if redis.call('HGET', qu, f[3]) == id then
        redis.call('HDEL', qu, f[3])
    end
    redis.call('DEL', skey(id))
    return 1 + drop_deliveries(id)
end

-- Whether `id` is a live subscription of (project, queue) at `now`.
local function live(id, project, queue, now)
    local f = redis.call('HMGET', skey(id), 'project', 'queue', 'expires')
    return f[1] == project and f[2] == queue and tonumber(f[3]) > now
end

-- The watch registry: '<queue>:<project>' names a watched queue.
local function watched_name(project, queue)
    return queue .. ':' .. project
end

local function watch_key(name)
    return P .. ':w:' .. name
end

local function forget_if_unwatched(name)
    if redis.call('EXISTS', watch_key(name)) == 0 then
        redis.call('SREM', P .. ':wq', name)
    end
end
