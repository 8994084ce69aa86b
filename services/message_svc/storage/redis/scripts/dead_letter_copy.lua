-- Second step of a dead-letter move on a Redis Cluster (the first, in the source queue's
-- slot, is claim.lua staging the message): copy messages into the dead-letter queue with
-- their ids, each move once only, so the step can be repeated at any time, even after the
-- copy was claimed or deleted.
-- KEYS: dead-letter queue prefix, registry (of the dead-letter queue's slot).
-- ARGV: dead-letter queue tag, now, then eleven values per message: id, move (the claim that
--       started it), body, ttl, created, expires, visible_at, client id, until when to
--       remember the move (the source message's expiry, after which it is not copied again),
--       group ('' = none; a message keeps its group, behind the group's messages copied
--       before it), fair-queue group ('' = none).
-- Returns {how many messages were copied now, 1 when the registry was empty before (its slot
-- must then be indexed) else 0}.
local base, registry = KEYS[1], KEYS[2]
local now = ARGV[2]
local copied = 0
local groups, seen = {}, {}
for at = 3, #ARGV, 11 do
  local id = ARGV[at]
  local move = ARGV[at + 1] .. ' ' .. id
  if not redis.call('ZSCORE', base .. 'in', move) then
    local seq = string.format('%d', redis.call('INCR', base .. 'seq'))
    local expires = ARGV[at + 5]
    local group = ARGV[at + 9]
    redis.call('HSET', base .. 'm:' .. id, 's', seq, 'b', ARGV[at + 2], 't', ARGV[at + 3],
      'c', ARGV[at + 4], 'e', expires, 'v', ARGV[at + 6], 'i', ARGV[at + 7], 'k', '', 'x', '0',
      'n', '0')
    redis.call('ZADD', base .. 'all', seq, id)
    redis.call('ZADD', base .. 'exp', expires, id)
    if ARGV[at + 10] ~= '' then
      redis.call('HSET', base .. 'm:' .. id, 'f', ARGV[at + 10])
    end
    if group ~= '' then
      redis.call('HSET', base .. 'm:' .. id, 'g', group)
      redis.call('ZADD', base .. 'g:' .. group, seq, id)
      if not seen[group] then
        seen[group] = true
        groups[#groups + 1] = group
      end
    else
      redis.call('ZADD', base .. 'free', seq, id)
      if ARGV[at + 10] ~= '' then
        fair_index(base, id, seq, ARGV[at + 10])
      end
    end
    redis.call('ZADD', base .. 'in', ARGV[at + 8], move)
    copied = copied + 1
  end
end
for _, group in ipairs(groups) do
  settle_group(base, group, now)
end
local first = 0
if copied > 0 and redis.call('SADD', registry, ARGV[1]) == 1
    and redis.call('SCARD', registry) == 1 then
  first = 1
end
return {copied, first}
