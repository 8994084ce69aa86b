-- Store a batch of messages with consecutive seqs, in the order given.
-- KEYS: queue prefix, registry.
-- ARGV: queue tag, client id, now, expected queue version ('' = no check), then five values
--       per message: id, body, ttl, expires, visible_at (equal to now when not delayed).
-- Returns the first seq of the batch (0 when empty), or {'stale', current version} having
-- stored nothing.
local base, registry = KEYS[1], KEYS[2]
local client, now = ARGV[2], ARGV[3]
local stale = stale_version(base, ARGV[4])
if stale then
  return {'stale', stale}
end
local count = (#ARGV - 4) / 5
if count == 0 then
  return 0
end
local last = redis.call('INCRBY', base .. 'seq', count)
local now_n = tonumber(now)
for j = 0, count - 1 do
  local at = 5 + j * 5
  local id, expires, visible = ARGV[at], ARGV[at + 3], ARGV[at + 4]
  local seq = string.format('%d', last - count + 1 + j)
  redis.call('HSET', base .. 'm:' .. id, 's', seq, 'b', ARGV[at + 1], 't', ARGV[at + 2],
    'c', now, 'e', expires, 'v', visible, 'i', client, 'k', '', 'x', '0', 'n', '0')
  redis.call('ZADD', base .. 'all', seq, id)
  redis.call('ZADD', base .. 'exp', expires, id)
  if tonumber(visible) > now_n then
    redis.call('ZADD', base .. 'delayed', visible, id)
  else
    redis.call('ZADD', base .. 'free', seq, id)
  end
end
redis.call('SADD', registry, ARGV[1])
return last - count + 1
