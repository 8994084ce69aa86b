-- Restart a live claim's TTL from now and extend its messages; 1 when renewed, else 0.
-- KEYS: queue prefix.
-- ARGV: now, claim id, ttl, grace, claim expires, message ttl, message expires.
local base = KEYS[1]
local now_n, cid = tonumber(ARGV[1]), ARGV[2]
local claim_exp, msg_ttl, msg_exp = ARGV[5], ARGV[6], ARGV[7]
local key = base .. 'c:' .. cid
local claim = redis.call('HMGET', key, 'e', 'm')
if not claim[1] or tonumber(claim[1]) <= now_n then
  return 0
end
redis.call('HSET', key, 't', ARGV[3], 'g', ARGV[4], 'e', claim_exp)
redis.call('ZADD', base .. 'claims', claim_exp, cid)
redis.call('ZADD', base .. 'fhx', 'XX', claim_exp, cid)
local msg_exp_n = tonumber(msg_exp)
for id in string.gmatch(claim[2], '%S+') do
  local row = read_message(base, id)
  if row and row[CLAIM] == cid and tonumber(row[CLAIM_EXP]) > now_n
      and tonumber(row[EXPIRES]) > now_n then
    local mkey = base .. 'm:' .. id
    redis.call('HSET', mkey, 'x', claim_exp)
    if row[GROUP] then
      -- The claim holds the group's head: the group waits for the renewed claim.
      redis.call('ZADD', base .. 'gheld', claim_exp, id)
      redis.call('ZADD', base .. 'gwait', 'XX', claim_exp, row[GROUP])
    else
      redis.call('ZADD', base .. 'held', claim_exp, id)
    end
    if tonumber(row[EXPIRES]) < msg_exp_n then
      redis.call('HSET', mkey, 't', msg_ttl, 'e', msg_exp)
      redis.call('ZADD', base .. 'exp', msg_exp, id)
    end
  end
end
return 1
