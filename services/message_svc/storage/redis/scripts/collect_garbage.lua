-- Remove up to batch expired messages, up to batch expired claims and up to batch expired
-- deduplication ids of one queue; forget the queue in the registry once it holds nothing. On a Redis Cluster, also hand back up to
-- batch dead-letter moves that stalled (started before the given time and not finished, say
-- because the process making them died), each leased again from now, for the caller to
-- finish; moves of messages that expired meanwhile are dropped.
-- KEYS: queue prefix, registry. ARGV: now, batch, queue tag, stalled when started before.
-- Returns {items removed, stalled moves}; a stalled move is the id, then the dead-letter
-- queue's tag, its ttl and expires ('' = keep), the move's claim id, then the message's
-- fields.
local base, registry = KEYS[1], KEYS[2]
local now, batch = ARGV[1], tonumber(ARGV[2])
local now_n = tonumber(now)
local ids = redis.call('ZRANGEBYSCORE', base .. 'exp', '-inf', now, 'LIMIT', 0, batch)
local groups, seen = {}, {}
for _, id in ipairs(ids) do
  local found = redis.call('HMGET', base .. 'm:' .. id, 'g', 'f')
  local group = found[1]
  remove_message(base, id, group, found[2])
  if group and not seen[group] then
    seen[group] = true
    groups[#groups + 1] = group
  end
end
for _, group in ipairs(groups) do
  settle_group(base, group, now)
end
local dedups = redis.call('ZRANGEBYSCORE', base .. 'ddx', '-inf', now, 'LIMIT', 0, batch)
if #dedups > 0 then
  redis.call('HDEL', base .. 'dd', unpack(dedups))
  redis.call('ZREM', base .. 'ddx', unpack(dedups))
end
local cids = redis.call('ZRANGEBYSCORE', base .. 'claims', '-inf', now, 'LIMIT', 0, batch)
for _, cid in ipairs(cids) do
  redis.call('DEL', base .. 'c:' .. cid)
  redis.call('ZREM', base .. 'claims', cid)
end
local settled = fair_settle(base, now, batch)
local stalled = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', base .. 'moving', '-inf', ARGV[4],
    'LIMIT', 0, batch)) do
  local staged = base .. 'd:' .. id
  local move = redis.call('HMGET', staged, 'q', 'T', 'E', 'w', unpack(MESSAGE_FIELDS))
  if move[1] and tonumber(move[9]) > now_n then
    redis.call('ZADD', base .. 'moving', now, id)
    table.insert(move, 1, id)
    stalled[#stalled + 1] = move
  else
    redis.call('DEL', staged)
    redis.call('ZREM', base .. 'moving', id)
  end
end
redis.call('ZREMRANGEBYSCORE', base .. 'in', '-inf', now)
if redis.call('EXISTS', base .. 'all', base .. 'claims', base .. 'moving', base .. 'in',
    base .. 'ddx', base .. 'fhx') == 0 then
  redis.call('UNLINK', base .. 'free', base .. 'delayed', base .. 'held', base .. 'ready',
    base .. 'gwait', base .. 'gheld', base .. 'dd', base .. 'fin', base .. 'ffg')
  redis.call('SREM', registry, ARGV[3])
end
return {#ids + #cids + #dedups + settled, stalled}
