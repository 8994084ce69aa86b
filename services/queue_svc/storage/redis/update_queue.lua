-- Compare-and-set of a queue's metadata: the new metadata is stored only when the stored
-- metadata is still the text the caller read and patched.
--
-- KEYS[1]  hash of the project's queues: name -> metadata (JSON text)
-- ARGV[1]  queue name
-- ARGV[2]  metadata as the caller read it (JSON text)
-- ARGV[3]  new metadata (JSON text)
--
-- Returns 1 when stored (or already stored: an update sent again after its connection
-- failed), 0 when the metadata changed meanwhile (read again and retry), -1 when the queue
-- does not exist (any more).

local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
    return -1
end
if current == ARGV[3] then
    return 1
end
if current ~= ARGV[2] then
    return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
