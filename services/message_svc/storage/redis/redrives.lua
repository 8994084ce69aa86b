-- Compare-and-set of a redrive job record: the new document is stored only when the stored
-- version is still the one the caller read.
--
-- KEYS[1]  hash of the job: v -> version, d -> document (JSON text)
-- ARGV[1]  version the caller read ('0' when nothing was stored)
-- ARGV[2]  new document (JSON text)
--
-- Returns 1 when stored (as version ARGV[1] + 1; or already stored so, by this change sent
-- again after its connection failed), 0 when the job changed meanwhile.

local current = redis.call('HGET', KEYS[1], 'v') or '0'
if current == tostring(tonumber(ARGV[1]) + 1) and redis.call('HGET', KEYS[1], 'd') == ARGV[2] then
    return 1
end
if current ~= ARGV[1] then
    return 0
end
redis.call('HSET', KEYS[1], 'v', tostring(tonumber(ARGV[1]) + 1), 'd', ARGV[2])
return 1
