-- The metadata of a queue, created with empty metadata first when it does not exist.
-- An existing queue is never touched.
--
-- KEYS[1]  hash of the project's queues: name -> metadata (JSON text)
-- KEYS[2]  sorted set of the project's queue names, all with score 0
-- ARGV[1]  queue name
--
-- Returns the stored metadata (JSON text).

if redis.call('HSETNX', KEYS[1], ARGV[1], '{}') == 1 then
    redis.call('ZADD', KEYS[2], 0, ARGV[1])
end
return redis.call('HGET', KEYS[1], ARGV[1])
