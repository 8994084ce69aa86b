-- Delete a queue, its metadata, its pool and its place in the name order.
--
-- KEYS[1]  hash of the project's queues: name -> metadata (JSON text), name/pool -> pool
-- KEYS[2]  sorted set of the project's queue names, all with score 0
-- ARGV[1]  queue name
--
-- Returns 1 when the queue existed, 0 otherwise.

local deleted = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1] .. '/pool')
redis.call('ZREM', KEYS[2], ARGV[1])
return deleted
