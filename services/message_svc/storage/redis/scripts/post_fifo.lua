-- Store a batch of messages of a FIFO queue: each may carry a group and a deduplication id.
-- A message whose dedup id was accepted in the queue until after now (by an earlier post, or
-- earlier in this batch) is not stored and answers with the first message's id; the others
-- get consecutive seqs in the order given, as post.lua gives them.
-- KEYS: queue prefix, registry.
-- ARGV: queue tag, client id, now, expected queue version ('' = no check), until when an
--       accepted dedup id is remembered (now + the queue's dedup window), then seven values
--       per message: id, body, ttl, expires, visible_at, group ('' = none), dedup id ('' =
--       none).
-- Returns {'stale', current version} having stored nothing, or {first, ids, stored}: first is
-- 'first' when the registry was empty before (as post.lua), else ''; ids and stored have one
-- entry per message, the id it answers with and 1 when it was stored now, 0 for a duplicate.
-- A batch sent again after its connection failed (its ids are new for every batch) finds a
-- message of it stored, or a dedup id pointing to it, and answers as the first time.
local base, registry = KEYS[1], KEYS[2]
local client, now, remember = ARGV[2], ARGV[3], ARGV[5]
local now_n = tonumber(now)
local count = (#ARGV - 5) / 7

-- The message first accepted with a dedup id, while it is remembered.
local function accepted(dedup)
  local known = redis.call('HGET', base .. 'dd', dedup)
  if known then
    local id, till = string.match(known, '^(%S+) (%S+)$')
    if tonumber(till) > now_n then
      return id
    end
  end
  return nil
end

local ids, stored = {}, {}
local replayed = false
for j = 0, count - 1 do
  local at = 6 + j * 7
  local id, dedup = ARGV[at], ARGV[at + 6]
  local first = dedup ~= '' and accepted(dedup)
  if first == id or redis.call('EXISTS', base .. 'm:' .. id) == 1 then
    replayed = true
    break
  end
end
if replayed then
  for j = 0, count - 1 do
    local at = 6 + j * 7
    local id, dedup = ARGV[at], ARGV[at + 6]
    local first = dedup ~= '' and accepted(dedup) or id
    ids[#ids + 1] = first
    stored[#stored + 1] = first == id and 1 or 0
  end
  return {'', ids, stored}
end

local stale = stale_version(base, ARGV[4])
if stale then
  return {'stale', stale}
end

-- Which messages are stored: not duplicates of an accepted id, nor of one earlier here.
local batch = {}
local fresh = 0
for j = 0, count - 1 do
  local at = 6 + j * 7
  local id, dedup = ARGV[at], ARGV[at + 6]
  local first = dedup ~= '' and (batch[dedup] or accepted(dedup))
  if first then
    ids[#ids + 1], stored[#stored + 1] = first, 0
  else
    ids[#ids + 1], stored[#stored + 1] = id, 1
    fresh = fresh + 1
    if dedup ~= '' then
      batch[dedup] = id
    end
  end
end
if fresh == 0 then
  return {'', ids, stored}
end

local last = redis.call('INCRBY', base .. 'seq', fresh)
local seq_n = last - fresh
local groups, seen = {}, {}
for j = 0, count - 1 do
  if stored[j + 1] == 1 then
    local at = 6 + j * 7
    local id, expires, visible = ARGV[at], ARGV[at + 3], ARGV[at + 4]
    local group, dedup = ARGV[at + 5], ARGV[at + 6]
    seq_n = seq_n + 1
    local seq = string.format('%d', seq_n)
    local key = base .. 'm:' .. id
    redis.call('HSET', key, 's', seq, 'b', ARGV[at + 1], 't', ARGV[at + 2], 'c', now,
      'e', expires, 'v', visible, 'i', client, 'k', '', 'x', '0', 'n', '0')
    redis.call('ZADD', base .. 'all', seq, id)
    redis.call('ZADD', base .. 'exp', expires, id)
    if group ~= '' then
      redis.call('HSET', key, 'g', group)
      local gkey = base .. 'g:' .. group
      -- A group that had messages is already in ready or gwait, ranked by its head.
      if not seen[group] and redis.call('EXISTS', gkey) == 0 then
        groups[#groups + 1] = group
      end
      seen[group] = true
      redis.call('ZADD', gkey, seq, id)
    elseif tonumber(visible) > now_n then
      redis.call('ZADD', base .. 'delayed', visible, id)
    else
      redis.call('ZADD', base .. 'free', seq, id)
    end
    if dedup ~= '' then
      redis.call('HSET', base .. 'dd', dedup, id .. ' ' .. remember)
      redis.call('ZADD', base .. 'ddx', remember, dedup)
    end
  end
end
for _, group in ipairs(groups) do
  settle_group(base, group, now)
end
if redis.call('SADD', registry, ARGV[1]) == 1 and redis.call('SCARD', registry) == 1 then
  return {'first', ids, stored}
end
return {'', ids, stored}
