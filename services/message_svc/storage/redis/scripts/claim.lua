-- Claim up to limit of the oldest claimable messages; dead-letter those claimed too often.
-- Messages with a group are taken by the group rules (take_groups in lib.lua), whether the
-- caller asked for a claim of a FIFO queue or not.
-- KEYS: queue prefix, dead-letter queue prefix (the queue's own when no policy), registry.
-- ARGV: now, limit, claim id, ttl, grace, claim expires, message ttl (ttl + grace), message
--       expires (claim expires + grace), max claim count ('' = no policy), dead-letter queue
--       tag, dead-letter ttl ('' = keep), dead-letter expires (now + dead-letter ttl),
--       expected queue version ('' = no check), '1' to stage dead letters instead of moving
--       them ('' = move; on a Redis Cluster, where the dead-letter queue is in another slot),
--       then for a fair claim ('' = not fair) the noisy share in per cent, the noisy minimum
--       and the lookahead (take_fair in lib.lua).
-- Returns {claimed rows, dead letters, 1 when a fair claim was futile (take_fair) else 0},
-- or {'stale', current version} having done nothing.
-- Dead letters are the moved ids, or the staged rows: each message staged leaves every index
-- of the queue for d:<id> and moving, for the caller to copy to the dead-letter queue (see
-- dead_letter_copy.lua) and then drop (dead_letter_done.lua).
-- A claim sent again after its connection failed (its id is new for every claim) finds
-- itself and answers what it holds.
local base, dlq, registry = KEYS[1], KEYS[2], KEYS[3]
local now, limit, cid = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local claim_exp, msg_ttl, msg_exp = ARGV[6], ARGV[7], ARGV[8]
local max_count = tonumber(ARGV[9])
local dlq_tag, dlq_ttl, dlq_exp = ARGV[10], ARGV[11], ARGV[12]
local stage = ARGV[14] == '1'
local msg_exp_n = tonumber(msg_exp)

local replayed = redis.call('HGET', base .. 'c:' .. cid, 'm')
if replayed then
  return {claim_rows(base, cid, tonumber(now), replayed), {}}
end

local stale = stale_version(base, ARGV[13])
if stale then
  return {'stale', stale}
end

local claimed, dead = {}, {}
-- The ZADD to held of the claimed messages without a group, in one command once all are
-- taken (nothing reads held while they are).
local held = {}

local function stage_dead_letter(row)
  local id = row[ID]
  for _, index in ipairs(INDEXES) do
    redis.call('ZREM', base .. index, id)
  end
  fair_unindex(base, id, row[FAIR])
  if row[GROUP] then
    redis.call('ZREM', base .. 'g:' .. row[GROUP], id)
    redis.call('ZREM', base .. 'gheld', id)
  end
  local staged = base .. 'd:' .. id
  redis.call('RENAME', base .. 'm:' .. id, staged)
  redis.call('HSET', staged, 'q', dlq_tag, 'T', dlq_ttl, 'E', dlq_exp, 'w', cid)
  redis.call('ZADD', base .. 'moving', now, id)
  dead[#dead + 1] = row
end

local function dead_letter(row)
  local id, group = row[ID], row[GROUP]
  remove_message(base, id, group, row[FAIR])
  local seq = string.format('%d', redis.call('INCR', dlq .. 'seq'))
  local ttl, expires = row[TTL], row[EXPIRES]
  if dlq_ttl ~= '' then
    ttl, expires = dlq_ttl, dlq_exp
  end
  redis.call('HSET', dlq .. 'm:' .. id, 's', seq, 'b', row[BODY], 't', ttl, 'c', row[CREATED],
    'e', expires, 'v', row[VISIBLE], 'i', row[CLIENT], 'k', '', 'x', '0', 'n', '0')
  redis.call('ZADD', dlq .. 'all', seq, id)
  redis.call('ZADD', dlq .. 'exp', expires, id)
  if row[FAIR] then
    redis.call('HSET', dlq .. 'm:' .. id, 'f', row[FAIR])
  end
  if group then
    -- Keeps its group there, behind the group's messages already moved (in seq order).
    redis.call('HSET', dlq .. 'm:' .. id, 'g', group)
    redis.call('ZADD', dlq .. 'g:' .. group, seq, id)
    settle_group(dlq, group, now)
  else
    redis.call('ZADD', dlq .. 'free', seq, id)
    if row[FAIR] then
      fair_index(dlq, id, seq, row[FAIR])
    end
  end
  redis.call('SADD', registry, dlq_tag)
  dead[#dead + 1] = id
end

local function is_worn(row)
  return max_count and tonumber(row[COUNT]) >= max_count
end

local function on_message(row)
  if is_worn(row) then
    if stage then
      stage_dead_letter(row)
    else
      dead_letter(row)
    end
    return false
  end
  local key = base .. 'm:' .. row[ID]
  row[CLAIM], row[CLAIM_EXP] = cid, claim_exp
  row[COUNT] = (tonumber(row[COUNT]) or 0) + 1
  if tonumber(row[EXPIRES]) < msg_exp_n then
    row[TTL], row[EXPIRES] = msg_ttl, msg_exp
    redis.call('HSET', key, 'k', cid, 'x', claim_exp, 'n', row[COUNT], 't', msg_ttl,
      'e', msg_exp)
    redis.call('ZADD', base .. 'exp', msg_exp, row[ID])
  else
    redis.call('HSET', key, 'k', cid, 'x', claim_exp, 'n', row[COUNT])
  end
  if row[GROUP] then
    redis.call('ZADD', base .. 'gheld', claim_exp, row[ID])
  else
    held[#held + 1] = claim_exp
    held[#held + 1] = row[ID]
  end
  claimed[#claimed + 1] = row
  return true
end

local added, futile = nil, false
if ARGV[15] and ARGV[15] ~= '' and not has_groups(base) then
  local _
  _, added, futile = take_fair(base, now, limit, tonumber(ARGV[15]), tonumber(ARGV[16]),
                       tonumber(ARGV[17]), is_worn, on_message)
else
  take(base, now, limit, on_message)
end

if #held > 0 then
  redis.call('ZADD', base .. 'held', unpack(held))
end
if #claimed > 0 then
  if added then -- a fair claim may take a message after a newer one: the claim is by seq
    table.sort(claimed, function(x, y) return tonumber(x[SEQ]) < tonumber(y[SEQ]) end)
  end
  local ids = {}
  for i, row in ipairs(claimed) do
    ids[i] = row[ID]
  end
  redis.call('HSET', base .. 'c:' .. cid, 't', ARGV[4], 'g', ARGV[5], 'c', now, 'e', claim_exp,
    'm', table.concat(ids, ' '))
  redis.call('ZADD', base .. 'claims', claim_exp, cid)
  if added and next(added) then
    for group, n in pairs(added) do
      redis.call('HINCRBY', base .. 'fh:' .. cid, group, n)
      fair_add(base, group, n)
    end
    redis.call('ZADD', base .. 'fhx', claim_exp, cid)
  end
end
return {claimed, dead, futile and 1 or 0}
