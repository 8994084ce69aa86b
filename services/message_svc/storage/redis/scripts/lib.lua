-- Shared by every script of the message store: prepended to each one when it is loaded.
--
-- KEYS[1] is the queue's key prefix "<prefix>:{<project>/<queue>}:" (the hash tag keeps all
-- of a queue's keys on one shard); the keys of the queue are that prefix followed by:
--   seq      string  last seq given out (kept when the queue is deleted: a seq is never reused)
--   version  string  the queue's version, absent = 0 (kept when the queue is deleted or its
--                    garbage collected: a version never goes back)
--   all      zset    every message id, score seq
--   free     zset    ids not held and no longer delayed, score seq (may hold expired ones)
--   delayed  zset    ids whose delay has not been seen to pass, score visible_at
--   held     zset    ids taken by a claim, score claim expiry (expired claims included
--                    until the next normalize() moves their messages back to free)
--   exp      zset    every message id, score expires (for garbage collection)
--   claims   zset    claim ids, score claim expiry
--   m:<id>   hash    one message (fields below)
--   c:<cid>  hash    one claim: t ttl, g grace, c created, e expires, m held ids (space-separated)
-- and, on a Redis Cluster only, for dead-letter moves done in two steps (docs/redis-cluster.md):
--   moving   zset    ids of messages leaving for a dead-letter queue, score when the move
--                    started (or was last resumed)
--   d:<id>   hash    such a message, out of every index above: its fields plus q (the
--                    dead-letter queue's tag), T and E (its new ttl and expires, '' = keep)
--                    and w (the move: the id of the claim that started it)
--   in       zset    moves received here, as "<move> <id>", score until when a repeated
--                    copy may come (the source message's expiry): each move copies once
--
-- Message fields: s seq, b body, t ttl, c created, e expires, v visible_at, i client_id,
-- k claim id ('' = none), x claim expiry (0 = none), n claim count.
-- Times come from the caller as exact decimal strings and are stored and compared as given:
-- a script never formats a float (Lua would round it to 14 digits).

local MESSAGE_FIELDS = {'s', 'b', 't', 'c', 'e', 'v', 'i', 'k', 'x', 'n'}
-- Positions in a message row (the id first, then MESSAGE_FIELDS).
local ID, SEQ, BODY, TTL, CREATED, EXPIRES, VISIBLE, CLIENT, CLAIM, CLAIM_EXP, COUNT =
  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
local INDEXES = {'all', 'free', 'delayed', 'held', 'exp'}

-- A message as {id, s, b, t, c, e, v, i, k, x, n}, or nil when there is none with that id.
local function read_message(base, id)
  local row = redis.call('HMGET', base .. 'm:' .. id, unpack(MESSAGE_FIELDS))
  if not row[1] then
    return nil
  end
  table.insert(row, 1, id)
  return row
end

local function remove_message(base, id)
  redis.call('DEL', base .. 'm:' .. id)
  for _, index in ipairs(INDEXES) do
    redis.call('ZREM', base .. index, id)
  end
end

-- The queue's current version when it is not expected (a decimal string, '' = no check), or
-- nil when it is (or nothing is expected). Compared as text: versions are written by INCR.
local function stale_version(base, expected)
  if expected == '' then
    return nil
  end
  local current = redis.call('GET', base .. 'version') or '0'
  if current == expected then
    return nil
  end
  return current
end

-- The live messages a claim still holds, in the order it took them.
local function claim_rows(base, cid, now_n, ids)
  local rows = {}
  for id in string.gmatch(ids, '%S+') do
    local row = read_message(base, id)
    if row and row[CLAIM] == cid and tonumber(row[CLAIM_EXP]) > now_n
        and tonumber(row[EXPIRES]) > now_n then
      rows[#rows + 1] = row
    end
  end
  return rows
end

local function seq_of(base, id)
  return redis.call('ZSCORE', base .. 'all', id)
end

-- Makes free complete as of now: messages whose delay has passed and messages of expired
-- claims join it. Each message moves at most once per delay or claim, so the cost is shared
-- out over the operations that follow.
local function normalize(base, now)
  for _, index in ipairs({'delayed', 'held'}) do
    local key = base .. index
    local due = redis.call('ZRANGEBYSCORE', key, '-inf', now)
    if #due > 0 then
      for _, id in ipairs(due) do
        local seq = seq_of(base, id)
        if seq then
          redis.call('ZADD', base .. 'free', seq, id)
        end
      end
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    end
  end
end

-- Takes the oldest claimable messages off free, up to limit, in seq order, calling
-- on_message(row) for each unexpired one; on_message returns true when the message counts
-- toward limit. Expired messages met on the way leave free (collect_garbage removes them).
local function take_free(base, now, limit, on_message)
  local now_n = tonumber(now)
  local taken = 0
  local free = base .. 'free'
  while taken < limit do
    local ids = redis.call('ZRANGE', free, 0, limit - taken - 1)
    if #ids == 0 then
      break
    end
    for _, id in ipairs(ids) do
      redis.call('ZREM', free, id)
      local row = read_message(base, id)
      if row and tonumber(row[EXPIRES]) > now_n and on_message(row) then
        taken = taken + 1
      end
    end
  end
  return taken
end
