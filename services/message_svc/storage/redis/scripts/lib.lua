-- Shared by every script of the message store. A script carries, in front of its own text, the
-- top-level definitions below that it names and those they name in turn, as Redis runs a
-- script's whole text on every call (services/common/lua_scripts.py). A definition starts at
-- a line beginning with "local"; this header, before the first one, is carried by none.
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
-- and, for message groups (FIFO queues, docs/architecture.md): a message with a group is in
-- all, exp and its group's zset, never in free, delayed or held:
--   g:<group> zset   the group's message ids, score seq (taken and delayed ones included;
--                    expired ones until a claim or the garbage collection meets them)
--   ready    zset    groups whose head (first unexpired message) may be claimable now, score
--                    the head's seq (a claim merges it with free by seq)
--   gwait    zset    the other groups with messages, score when they may become claimable:
--                    the expiry of the claim holding the head, or when the delayed head shows
--   gheld    zset    ids of messages with a group taken by a claim, score claim expiry
--   dd       hash    deduplication ids accepted by post_fifo: dedup id -> "<id> <until>"
--   ddx      zset    the same dedup ids, score until (for garbage collection)
-- and, for fair queues (a standard queue's messages with a group, field f: indexed as
-- messages without a group; docs/architecture.md, "Fair queues"):
--   fin      hash    group -> its messages held by fair claims; '' -> the sum over groups
--   fh:<cid> hash    one fair claim's share of fin: group -> messages of it the claim holds
--   fhx      zset    the fair claims with an fh hash, score claim expiry (settled, their
--                    counts taken off fin, when released or once expired)
--   ff:<group> zset  the group index: the group's ids in free, score seq (a message joins
--                    and leaves it with free: fair_index, fair_unindex; expired ones stay
--                    until a claim meets them, as in free)
--   ffg      zset    the groups with an ff zset, score at most the seq of its oldest entry
--                    (a lower bound, raised to the exact seq by the fair claim that meets it;
--                    a group whose ff zset is gone stays until then)
-- A group that has messages is in ready or in gwait (settle_group puts it in the right one
-- after every change of its head); an entry may be stale, say a ready group whose head was
-- taken meanwhile, and the claim that meets it puts it right.
--
-- Message fields: s seq, b body, t ttl, c created, e expires, v visible_at, i client_id,
-- k claim id ('' = none), x claim expiry (0 = none), n claim count, g group (absent = none),
-- f fair-queue group (absent = none).
-- Times come from the caller as exact decimal strings and are stored and compared as given:
-- a script never formats a float (Lua would round it to 14 digits).

local MESSAGE_FIELDS = {'s', 'b', 't', 'c', 'e', 'v', 'i', 'k', 'x', 'n', 'g', 'f'}
-- Positions in a message row (the id first, then MESSAGE_FIELDS); GROUP and FAIR are false
-- when none.
local ID, SEQ, BODY, TTL, CREATED, EXPIRES, VISIBLE, CLIENT, CLAIM, CLAIM_EXP, COUNT, GROUP =
  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12
local FAIR = 13
local INDEXES = {'all', 'free', 'delayed', 'held', 'exp'}
-- Those of a message a live claim holds: a claim takes its messages off free (and delayed
-- ones are never claimable), and only an expired claim's go back to free (normalize).
local HELD_INDEXES = {'all', 'held', 'exp'}

-- A message as {id, s, b, t, c, e, v, i, k, x, n, g}, or nil when there is none with that id.
local function read_message(base, id)
  local row = redis.call('HMGET', base .. 'm:' .. id, unpack(MESSAGE_FIELDS))
  if not row[1] then
    return nil
  end
  table.insert(row, 1, id)
  return row
end

-- A message of fair-queue group fair joins free: it joins the group index too.
local function fair_index(base, id, seq, fair)
  redis.call('ZADD', base .. 'ff:' .. fair, seq, id)
  redis.call('ZADD', base .. 'ffg', 'LT', seq, fair)
end

-- A message of fair-queue group fair (false or nil = none) leaves free.
local function fair_unindex(base, id, fair)
  if fair then
    redis.call('ZREM', base .. 'ff:' .. fair, id)
  end
end

-- group: the message's group (false or nil = none); the caller settles the group after.
-- fair: its fair-queue group (false or nil = none). held: true when a live claim holds it,
-- which leaves it out of free and delayed (an id left there anyway, say by callers whose
-- clocks disagree about the claim's end, is dropped by the claim or normalize() that meets it
-- without its message).
local function remove_message(base, id, group, fair, held)
  redis.call('DEL', base .. 'm:' .. id)
  if group then
    for _, index in ipairs({'all', 'exp', 'gheld', 'g:' .. group}) do
      redis.call('ZREM', base .. index, id)
    end
    return
  end
  for _, index in ipairs(held and HELD_INDEXES or INDEXES) do
    redis.call('ZREM', base .. index, id)
  end
  fair_unindex(base, id, fair)
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

-- Makes free complete as of now: messages whose delay has passed and messages of expired
-- claims join it. Each message moves at most once per delay or claim, so the cost is shared
-- out over the operations that follow.
local function normalize(base, now)
  for _, index in ipairs({'delayed', 'held'}) do
    local key = base .. index
    local due = redis.call('ZRANGEBYSCORE', key, '-inf', now)
    if #due > 0 then
      for _, id in ipairs(due) do
        local f = redis.call('HMGET', base .. 'm:' .. id, 's', 'f')
        if f[1] then
          redis.call('ZADD', base .. 'free', f[1], id)
          if f[2] then
            fair_index(base, id, f[1], f[2])
          end
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
    local wanted = limit - taken
    local popped = redis.call('ZPOPMIN', free, wanted)  -- {id, seq, id, seq, ...}
    for i = 1, #popped, 2 do
      local id = popped[i]
      local row = read_message(base, id)
      if row then
        fair_unindex(base, id, row[FAIR])
      end
      if row and tonumber(row[EXPIRES]) > now_n and on_message(row) then
        taken = taken + 1
      end
    end
    if #popped < 2 * wanted then
      break  -- free is empty
    end
  end
  return taken
end

-- Message groups ----------------------------------------------------------------------------

-- Puts a group where its head says: in ready (scored by the head's seq) when the head may be
-- claimed now, in gwait (scored by when that may change) when the head is held by a live
-- claim or delayed, in neither when the group has no unexpired message. Expired messages met
-- at the head leave the group's zset (the garbage collection removes the messages).
local function settle_group(base, group, now)
  local now_n = tonumber(now)
  local gkey = base .. 'g:' .. group
  while true do
    local head = redis.call('ZRANGE', gkey, 0, 0)[1]
    if not head then
      redis.call('ZREM', base .. 'ready', group)
      redis.call('ZREM', base .. 'gwait', group)
      return
    end
    local f = redis.call('HMGET', base .. 'm:' .. head, 's', 'e', 'v', 'x')
    if f[1] and tonumber(f[2]) > now_n then
      local at = nil
      if tonumber(f[4]) > now_n then
        at = f[4]
      elseif tonumber(f[3]) > now_n then
        at = f[3]
        if tonumber(f[2]) < tonumber(at) then
          at = f[2] -- it expires before it shows: the next message is the head then
        end
      end
      if at then
        redis.call('ZREM', base .. 'ready', group)
        redis.call('ZADD', base .. 'gwait', at, group)
      else
        redis.call('ZREM', base .. 'gwait', group)
        redis.call('ZADD', base .. 'ready', f[1], group)
      end
      return
    end
    redis.call('ZREM', gkey, head)
  end
end

-- Settles the groups whose time in gwait has come (a claim expired, a delay passed).
local function wake_groups(base, now)
  for _, group in ipairs(redis.call('ZRANGEBYSCORE', base .. 'gwait', '-inf', now)) do
    settle_group(base, group, now)
  end
end

-- take_free for a queue with message groups: merges free (messages without a group) with the
-- heads of the ready groups, by seq. Of a group only its head may be taken, then the message
-- after it, and so on while they are claimable: one call may take several messages of a
-- group, in order. on_message(row) claims, moves or pops the message (it may remove it) and
-- returns true when it counts toward limit. The groups met are settled at the end (a group a
-- claim took from is then held, in gwait until the claim expires). Each step takes, moves or
-- drops something, or corrects a stale entry once, so the cost follows what is taken, never
-- the number of messages waiting behind a group's head.
local function take_groups(base, now, limit, on_message)
  local now_n = tonumber(now)
  local free, ready = base .. 'free', base .. 'ready'
  local taken = 0
  local after = {} -- group -> seq of the last message of it this call took or moved
  local met, met_list = {}, {}
  local function meet(group)
    if not met[group] then
      met[group] = true
      met_list[#met_list + 1] = group
    end
  end
  while taken < limit do
    local f = redis.call('ZRANGE', free, 0, 0, 'WITHSCORES')
    local r = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
    if not f[1] and not r[1] then
      break
    end
    if not r[1] or (f[1] and tonumber(f[2]) < tonumber(r[2])) then
      local id = f[1]
      redis.call('ZREM', free, id)
      local row = read_message(base, id)
      if row then
        fair_unindex(base, id, row[FAIR])
      end
      if row and tonumber(row[EXPIRES]) > now_n and on_message(row) then
        taken = taken + 1
      end
    else
      local group, score = r[1], tonumber(r[2])
      local gkey = base .. 'g:' .. group
      local ids
      if after[group] then
        ids = redis.call('ZRANGEBYSCORE', gkey, '(' .. after[group], '+inf', 'LIMIT', 0, 1)
      else
        ids = redis.call('ZRANGE', gkey, 0, 0)
      end
      local id = ids[1]
      local row = id and read_message(base, id)
      if not id then
        redis.call('ZREM', ready, group)
        meet(group)
      elseif not row or tonumber(row[EXPIRES]) <= now_n then
        redis.call('ZREM', gkey, id) -- expired: the next one comes in its place
      elseif tonumber(row[SEQ]) ~= score then
        redis.call('ZADD', ready, row[SEQ], group) -- a stale rank: merge it where it belongs
      elseif tonumber(row[CLAIM_EXP]) > now_n or tonumber(row[VISIBLE]) > now_n then
        redis.call('ZREM', ready, group) -- held or delayed: the group gives nothing more
        meet(group)
      else
        after[group] = row[SEQ]
        meet(group)
        if on_message(row) then
          taken = taken + 1
        end
        local nxt = redis.call('ZRANGEBYSCORE', gkey, '(' .. row[SEQ], '+inf', 'WITHSCORES',
                               'LIMIT', 0, 1)
        if nxt[1] then
          redis.call('ZADD', ready, nxt[2], group)
        else
          redis.call('ZREM', ready, group)
        end
      end
    end
  end
  for _, group in ipairs(met_list) do
    settle_group(base, group, now)
  end
  return taken
end

-- Whether the queue has message groups (then its free zset does not hold every free message).
local function has_groups(base)
  return redis.call('EXISTS', base .. 'ready', base .. 'gwait') > 0
end

-- What claims and pops take from: free alone while the queue has no message groups (one
-- EXISTS more than before groups), else free merged with the groups (take_groups).
local function take(base, now, limit, on_message)
  normalize(base, now)
  if not has_groups(base) then
    return take_free(base, now, limit, on_message)
  end
  wake_groups(base, now)
  return take_groups(base, now, limit, on_message)
end

-- Fair queues --------------------------------------------------------------------------------

-- Adds n (negative: takes) to a group's count of messages held by fair claims and to the sum.
local function fair_add(base, group, n)
  local fin = base .. 'fin'
  for _, field in ipairs({group, ''}) do
    if redis.call('HINCRBY', fin, field, n) <= 0 then
      redis.call('HDEL', fin, field)
    end
  end
end

-- Takes a fair claim's counts off fin (it was released or has expired).
local function fair_drop(base, cid)
  local key = base .. 'fh:' .. cid
  local held = redis.call('HGETALL', key)
  for i = 1, #held, 2 do
    fair_add(base, held[i], -tonumber(held[i + 1]))
  end
  redis.call('DEL', key)
  redis.call('ZREM', base .. 'fhx', cid)
end

-- Settles the fair claims expired by now (up to batch of them when given); returns how many.
local function fair_settle(base, now, batch)
  local cids
  if batch then
    cids = redis.call('ZRANGEBYSCORE', base .. 'fhx', '-inf', now, 'LIMIT', 0, batch)
  else
    cids = redis.call('ZRANGEBYSCORE', base .. 'fhx', '-inf', now)
  end
  for _, cid in ipairs(cids) do
    fair_drop(base, cid)
  end
  return #cids
end

-- A message of group held by live claim cid was deleted: it no longer counts.
local function fair_forget(base, cid, group)
  local key = base .. 'fh:' .. cid
  if tonumber(redis.call('HGET', key, group) or '0') > 0 then
    redis.call('HINCRBY', key, group, -1)
    fair_add(base, group, -1)
  end
end

-- take_free for a fair claim (share in per cent, min in-flight count, lookahead): reads
-- claimable messages by seq (the window), at most limit + lookahead of them; takes those
-- without a group or of a group that is not noisy (counting what this call took). When the
-- window was read to its end and the claim is still short, it walks the group index (ffg by
-- each group's oldest claimable seq, passing over the noisy groups, at most 100 / share of
-- them) and takes the oldest claimable messages of the other groups past the window, by seq
-- across groups, each step reading a group's head: O(limit + groups passed over), never a
-- noisy backlog. Then, while still short of limit, it takes the oldest of those put aside.
-- worn(row) says which messages on_message moves to the dead-letter queue (they are handed
-- to it when met, and not counted as read). Returns what was taken, per group how many of
-- the taken messages have it, and whether the claim was futile: it read limit + lookahead
-- messages, the group index had none past them, and those put aside filled part of limit
-- (ClaimResult.futile).
local function take_fair(base, now, limit, share, min, lookahead, worn, on_message)
  normalize(base, now)
  local now_n = tonumber(now)
  fair_settle(base, now)
  local fin, free = base .. 'fin', base .. 'free'
  local total = tonumber(redis.call('HGET', fin, '') or '0')
  local counts, added = {}, {}
  local function count(group)
    local c = counts[group]
    if not c then
      c = tonumber(redis.call('HGET', fin, group) or '0')
      counts[group] = c
    end
    return c
  end
  local function noisy(group)
    local c = count(group)
    return c >= min and c * 100 > share * total
  end
  local taken, read, budget, aside = 0, 0, limit + lookahead, {}
  local function take_row(row)
    redis.call('ZREM', free, row[ID])
    fair_unindex(base, row[ID], row[FAIR])
    if on_message(row) then
      taken = taken + 1
      local group = row[FAIR]
      if group then
        counts[group] = count(group) + 1
        total = total + 1
        added[group] = (added[group] or 0) + 1
      end
    end
  end
  local after, size = '-inf', limit -- a plain claim's read first; more while put aside
  local edge = 0 -- seq of the last message the window looked at
  local indexed = 0 -- messages taken from the group index
  while taken < limit and read < budget do
    local page = math.min(budget - read, size)
    size = math.min(size * 2, math.max(128, limit))
    local found = redis.call('ZRANGEBYSCORE', free, after, '+inf', 'WITHSCORES', 'LIMIT', 0, page)
    for i = 1, #found, 2 do
      if taken >= limit or read >= budget then
        break
      end
      local id = found[i]
      after = '(' .. found[i + 1]
      edge = tonumber(found[i + 1])
      local row = read_message(base, id)
      if not row or tonumber(row[EXPIRES]) <= now_n then
        redis.call('ZREM', free, id)
        fair_unindex(base, id, row and row[FAIR])
      elseif worn(row) then
        take_row(row)
      else
        read = read + 1
        if row[FAIR] and noisy(row[FAIR]) then
          aside[#aside + 1] = row
        else
          take_row(row)
        end
      end
    end
    if #found < page * 2 then
      break
    end
  end
  if taken < limit and read >= budget then
    -- The group index. The first `passed` ranks of ffg are groups passed over (noisy, or
    -- whose oldest claimable message is in the window: put aside); a group taken from is
    -- ranked again by its next message, behind them.
    local ffg, passed = base .. 'ffg', 0
    while taken < limit do
      local r = redis.call('ZRANGE', ffg, passed, passed, 'WITHSCORES')
      if not r[1] then
        break
      end
      local group = r[1]
      local gkey = base .. 'ff:' .. group
      local head = redis.call('ZRANGE', gkey, 0, 0, 'WITHSCORES')
      if not head[1] then
        redis.call('ZREM', ffg, group)
      elseif head[2] ~= r[2] then
        redis.call('ZADD', ffg, head[2], group) -- a lower bound: where it belongs now
      elseif noisy(group) or tonumber(head[2]) <= edge then
        passed = passed + 1
      else
        local row = read_message(base, head[1])
        if not row or tonumber(row[EXPIRES]) <= now_n or tonumber(row[CLAIM_EXP]) > now_n
            or tonumber(row[VISIBLE]) > now_n then
          -- Expired (the garbage collection removes it), or out of date: drop the entry.
          redis.call('ZREM', gkey, head[1])
          if not row or tonumber(row[EXPIRES]) <= now_n then
            redis.call('ZREM', free, head[1])
          end
        else
          local before = taken
          take_row(row)
          indexed = indexed + taken - before
        end
      end
    end
  end
  -- Futile: the whole window read (not just every claimable message), too few taken, and
  -- nothing past it in the group index.
  local futile = #aside > 0 and taken < limit and read >= budget and indexed == 0
  for _, row in ipairs(aside) do
    if taken >= limit then
      break
    end
    take_row(row)
  end
  return taken, added, futile
end
