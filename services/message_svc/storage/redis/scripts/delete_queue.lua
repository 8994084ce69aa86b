-- Remove every message and claim of the queue (its seq counter stays). Idempotent.
-- KEYS: queue prefix, registry. ARGV: queue tag.
local base, registry = KEYS[1], KEYS[2]
for _, id in ipairs(redis.call('ZRANGE', base .. 'all', 0, -1)) do
  redis.call('UNLINK', base .. 'm:' .. id)
end
for _, cid in ipairs(redis.call('ZRANGE', base .. 'claims', 0, -1)) do
  redis.call('UNLINK', base .. 'c:' .. cid)
end
for _, cid in ipairs(redis.call('ZRANGE', base .. 'fhx', 0, -1)) do
  redis.call('UNLINK', base .. 'fh:' .. cid)
end
for _, id in ipairs(redis.call('ZRANGE', base .. 'moving', 0, -1)) do
  redis.call('UNLINK', base .. 'd:' .. id)
end
-- Every fair-queue group with an index is in ffg.
for _, group in ipairs(redis.call('ZRANGE', base .. 'ffg', 0, -1)) do
  redis.call('UNLINK', base .. 'ff:' .. group)
end
-- Every group with messages is in ready or gwait.
for _, index in ipairs({'ready', 'gwait'}) do
  for _, group in ipairs(redis.call('ZRANGE', base .. index, 0, -1)) do
    redis.call('UNLINK', base .. 'g:' .. group)
  end
end
for _, index in ipairs({'all', 'free', 'delayed', 'held', 'exp', 'claims', 'moving', 'in',
    'ready', 'gwait', 'gheld', 'dd', 'ddx', 'fin', 'fhx', 'ffg'}) do
  redis.call('UNLINK', base .. index)
end
redis.call('SREM', registry, ARGV[1])
return 0
