-- The metadata and pool of a queue, created with empty metadata and the given pool first when
-- it does not exist. An existing queue is never touched.
--
-- KEYS[1]  hash of the project's queues: name -> metadata (JSON text), name/pool -> pool
-- KEYS[2]  sorted set of the project's queue names, all with score 0
-- ARGV[1]  queue name
-- ARGV[2]  pool of a new queue ('' = message_svc's own store)
-- ARGV[3]  the most queues the project may have ('0' = no limit)
--
-- Returns {metadata (JSON text), pool or false}, or -1 when the queue is absent and the project
-- has ARGV[3] queues already (nothing is written).

local quota = tonumber(ARGV[3])
if quota > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
        and redis.call('ZCARD', KEYS[2]) >= quota then
    return -1
end
if redis.call('HSETNX', KEYS[1], ARGV[1], '{}') == 1 then
    redis.call('ZADD', KEYS[2], 0, ARGV[1])
    if ARGV[2] ~= '' then
        redis.call('HSET', KEYS[1], ARGV[1] .. '/pool', ARGV[2])
    end
end
return redis.call('HMGET', KEYS[1], ARGV[1], ARGV[1] .. '/pool')
