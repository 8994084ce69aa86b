-- Store a batch of messages with consecutive seqs, in the order given.
-- KEYS: queue prefix, registry.
-- ARGV: queue tag, client id, now, expected queue version ('' = no check), then six values
--       per message: id, body, ttl, expires, visible_at (equal to now when not delayed), group
--       ('' = none; a fair-queue group, field f: the message is indexed as one without).
-- Returns the first seq of the batch (0 when empty), or {'stale', current version} having
-- stored nothing, or {'first', first seq} when the registry was empty before (on a Redis
-- Cluster, where it is a set per slot, the slot must then be indexed). A batch sent again after its connection failed (its ids are new for every
-- batch) finds its first message stored, and is not stored twice.
local base, registry = KEYS[1], KEYS[2]
local client, now = ARGV[2], ARGV[3]
if #ARGV > 4 then
  local seq = redis.call('HGET', base .. 'm:' .. ARGV[5], 's')
  if seq then
    return tonumber(seq)
  end
end
local stale = stale_version(base, ARGV[4])
if stale then
  return {'stale', stale}
end
local count = (#ARGV - 4) / 6
if count == 0 then
  return 0
end
local last = redis.call('INCRBY', base .. 'seq', count)
local now_n = tonumber(now)
for j = 0, count - 1 do
  local at = 5 + j * 6
  local id, expires, visible = ARGV[at], ARGV[at + 3], ARGV[at + 4]
  local seq = string.format('%d', last - count + 1 + j)
  redis.call('HSET', base .. 'm:' .. id, 's', seq, 'b', ARGV[at + 1], 't', ARGV[at + 2],
    'c', now, 'e', expires, 'v', visible, 'i', client, 'k', '', 'x', '0', 'n', '0')
  if ARGV[at + 5] ~= '' then
    redis.call('HSET', base .. 'm:' .. id, 'f', ARGV[at + 5])
  end
  redis.call('ZADD', base .. 'all', seq, id)
  redis.call('ZADD', base .. 'exp', expires, id)
  if tonumber(visible) > now_n then
    redis.call('ZADD', base .. 'delayed', visible, id)
  else
    redis.call('ZADD', base .. 'free', seq, id)
    if ARGV[at + 5] ~= '' then
      fair_index(base, id, seq, ARGV[at + 5])
    end
  end
end
local first = last - count + 1
if redis.call('SADD', registry, ARGV[1]) == 1 and redis.call('SCARD', registry) == 1 then
  return {'first', first}
end
return first
