-- Helpers shared by the scripts of the notifier store: each carries, in front of its own text,
-- the top-level definitions below that it uses (services/common/lua_scripts.py).
--
-- Key layout, B being the base of every key name (ARGV[1] of every script): the URI's prefix
-- option P on one Redis server, and P:{P} on a Redis Cluster, where the hash tag {P} puts
-- every key of the store in one slot (docs/redis-cluster.md says why).
--   B:s:<id>                 hash   a subscription: project, queue, subscriber, ttl, options,
--                                   confirmed ('0'/'1'), created, expires
--   B:qs:<queue>:<project>   zset   the queue's subscription ids, score 0 (ordered by id)
--   B:qu:<queue>:<project>   hash   subscriber -> subscription id (uniqueness)
--   B:exp                    zset   subscription id -> expires (expiry sweep)
--   B:d:<id>                 hash   a pending delivery: subscription_id, project, queue,
--                                   subscriber, options, kind, document, attempts, created
--   B:due                    zset   delivery id -> due time
--   B:ld:<subscriber>        zset   the subscriber's lane: its delivery ids -> due time
--   B:lanes                  zset   subscriber -> earliest due time in its lane (lanes with
--                                   pending deliveries only)
--   B:ds:<subscription id>   set    the subscription's pending delivery ids
--   B:w:<queue>:<project>    zset   replica id -> expiry of its entry (replicas watching)
--   B:wq                     set    '<queue>:<project>' of every queue in a B:w: key
--   B:wf                     stream the watch feed (appended to by the store's Python code)
-- Queue names never contain ':', so <queue>:<project> is unambiguous.
--
-- KEYS: every script gets B:exp, B:due, B:lanes and B:wq first, then the keys its arguments
-- name (listed in its header). A key a script finds only by reading (a subscription id in an
-- index, the subscriber of a delivery, a queue in B:wq) is named from B: the caller cannot know
-- it, and it has B's hash tag, so it is in the slot of the declared keys.

local EXP, DUE, LANES, WQ = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local P = ARGV[1]

local function skey(id)
    return P .. ':s:' .. id
end

local function dkey(id)
    return P .. ':d:' .. id
end

local function ds_key(id)
    return P .. ':ds:' .. id
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

-- Keep the lane's score in B:lanes equal to its earliest due time.
local function refresh_lane(subscriber, lane_key)
    local first = redis.call('ZRANGE', lane_key or lane(subscriber), 0, 0, 'WITHSCORES')
    if #first == 0 then
        redis.call('ZREM', LANES, subscriber)
    else
        redis.call('ZADD', LANES, first[2], subscriber)
    end
end

-- Make delivery `id` of `subscriber` due at `due`.
local function schedule(subscriber, id, due, lane_key)
    lane_key = lane_key or lane(subscriber)
    redis.call('ZADD', DUE, due, id)
    redis.call('ZADD', lane_key, due, id)
    refresh_lane(subscriber, lane_key)
end

local function unschedule(subscriber, id)
    redis.call('ZREM', DUE, id)
    if subscriber then
        redis.call('ZREM', lane(subscriber), id)
        refresh_lane(subscriber)
    end
end

local function drop_deliveries(ds)
    local ids = redis.call('SMEMBERS', ds)
    for _, d in ipairs(ids) do
        local subscriber = redis.call('HGET', dkey(d), 'subscriber')
        redis.call('DEL', dkey(d))
        unschedule(subscriber, d)
    end
    redis.call('DEL', ds)
    return #ids
end

-- Remove a subscription, its index entries and its deliveries; how many items went. `keys`
-- holds those of its keys the caller declared (s, ds, qs, qu); the others are named from B.
local function remove_subscription(id, keys)
    keys = keys or {}
    local s, ds = keys.s or skey(id), keys.ds or ds_key(id)
    local f = redis.call('HMGET', s, 'project', 'queue', 'subscriber')
    redis.call('ZREM', EXP, id)
    if not f[1] then
        return drop_deliveries(ds)
    end
    redis.call('ZREM', keys.qs or qs_key(f[1], f[2]), id)
    local qu = keys.qu or qu_key(f[1], f[2])
    if redis.call('HGET', qu, f[3]) == id then
        redis.call('HDEL', qu, f[3])
    end
    redis.call('DEL', s)
    return 1 + drop_deliveries(ds)
end

-- Whether the subscription at key `s` is a live one of (project, queue) at `now`.
local function live(s, project, queue, now)
    local f = redis.call('HMGET', s, 'project', 'queue', 'expires')
    return f[1] == project and f[2] == queue and tonumber(f[3]) > now
end

-- The watch registry: '<queue>:<project>' names a watched queue.
local function watched_name(project, queue)
    return queue .. ':' .. project
end

local function watch_key(name)
    return P .. ':w:' .. name
end

local function forget_if_unwatched(name, key)
    if redis.call('EXISTS', key or watch_key(name)) == 0 then
        redis.call('SREM', WQ, name)
    end
end
