-- Create a queue, or replace the whole metadata of an existing one.
--
-- KEYS[1]  hash of the project's queues: name -> metadata (JSON text)
-- KEYS[2]  sorted set of the project's queue names, all with score 0 (ordered by name)
-- ARGV[1]  queue name
-- ARGV[2]  metadata (JSON text)
--
-- Returns 1 when the queue is new, 0 when its metadata was replaced.

local created = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return created
