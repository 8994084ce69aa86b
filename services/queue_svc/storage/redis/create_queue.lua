-- Create a queue, or replace the whole metadata of an existing one.
--
-- KEYS[1]  hash of the project's queues: name -> metadata (JSON text), name/pool -> pool
-- KEYS[2]  sorted set of the project's queue names, all with score 0 (ordered by name)
-- ARGV[1]  queue name
-- ARGV[2]  metadata (JSON text)
-- ARGV[3]  pool of a new queue ('' = message_svc's own store); an existing queue keeps its own
-- ARGV[4]  the most queues the project may have ('0' = no limit)
--
-- Returns 1 when the queue is new, 0 when its metadata was replaced, -1 when it is new and the
-- project has ARGV[4] queues already (nothing is written).

local quota = tonumber(ARGV[4])
if quota > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
        and redis.call('ZCARD', KEYS[2]) >= quota then
    return -1
end
local created = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
if created == 1 and ARGV[3] ~= '' then
    redis.call('HSET', KEYS[1], ARGV[1] .. '/pool', ARGV[3])
end
return created
