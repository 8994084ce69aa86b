-- A live claim and its live messages: {ttl, grace, created, expires, rows}, or nil.
-- KEYS: queue prefix. ARGV: now, claim id.
local base = KEYS[1]
local now_n, cid = tonumber(ARGV[1]), ARGV[2]
local claim = redis.call('HMGET', base .. 'c:' .. cid, 't', 'g', 'c', 'e', 'm')
if not claim[1] or tonumber(claim[4]) <= now_n then
  return nil
end
return {claim[1], claim[2], claim[3], claim[4], claim_rows(base, cid, now_n, claim[5])}
