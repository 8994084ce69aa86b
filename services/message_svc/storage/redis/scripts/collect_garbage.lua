-- Remove up to batch expired messages and up to batch expired claims of one queue; forget
-- the queue in the registry once it holds nothing. Returns how many items went.
-- KEYS: queue prefix, registry. ARGV: now, batch, queue tag.
local base, registry = KEYS[1], KEYS[2]
local now, batch = ARGV[1], tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', base .. 'exp', '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
  remove_message(base, id)
end
local cids = redis.call('ZRANGEBYSCORE', base .. 'claims', '-inf', now, 'LIMIT', 0, batch)
for _, cid in ipairs(cids) do
  redis.call('DEL', base .. 'c:' .. cid)
  redis.call('ZREM', base .. 'claims', cid)
end
if redis.call('EXISTS', base .. 'all', base .. 'claims') == 0 then
  redis.call('UNLINK', base .. 'free', base .. 'delayed', base .. 'held')
  redis.call('SREM', registry, ARGV[3])
end
return #ids + #cids
