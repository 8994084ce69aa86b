-- Store one message unless its key was posted to the queue before (an idempotent post).
-- KEYS: queue prefix, registry.
-- ARGV: queue tag, client id, now, expected queue version ('' = no check), key, seconds to
--       remember the key, then the message: id, body, ttl, expires, visible_at, group ('' =
--       none; a fair-queue group, field f, as post.lua keeps it).
-- The key is the string once:<key> holding the message id, set in the same step as the
-- message and expiring after the given seconds, whatever becomes of the message.
-- Returns {'known', id} having stored nothing when the key is there, {'stale', current
-- version}, {'first', seq} when the registry was empty before (as post.lua), else the seq.
-- The message is written as post.lua writes one.
local base, registry = KEYS[1], KEYS[2]
local client, now = ARGV[2], ARGV[3]
local once = base .. 'once:' .. ARGV[5]
local known = redis.call('GET', once)
if known then
  return {'known', known}
end
local stale = stale_version(base, ARGV[4])
if stale then
  return {'stale', stale}
end
local id, expires, visible = ARGV[7], ARGV[10], ARGV[11]
local last = redis.call('INCRBY', base .. 'seq', 1)
local seq = string.format('%d', last)
redis.call('HSET', base .. 'm:' .. id, 's', seq, 'b', ARGV[8], 't', ARGV[9],
  'c', now, 'e', expires, 'v', visible, 'i', client, 'k', '', 'x', '0', 'n', '0')
if ARGV[12] and ARGV[12] ~= '' then
  redis.call('HSET', base .. 'm:' .. id, 'f', ARGV[12])
end
redis.call('ZADD', base .. 'all', seq, id)
redis.call('ZADD', base .. 'exp', expires, id)
if tonumber(visible) > tonumber(now) then
  redis.call('ZADD', base .. 'delayed', visible, id)
else
  redis.call('ZADD', base .. 'free', seq, id)
  if ARGV[12] and ARGV[12] ~= '' then
    fair_index(base, id, seq, ARGV[12])
  end
end
redis.call('SET', once, id, 'EX', ARGV[6])
if redis.call('SADD', registry, ARGV[1]) == 1 and redis.call('SCARD', registry) == 1 then
  return {'first', last}
end
return last
