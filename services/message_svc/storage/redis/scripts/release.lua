-- End a claim: the messages it still holds become claimable at once. Idempotent.
-- KEYS: queue prefix. ARGV: claim id, now.
local base, cid = KEYS[1], ARGV[1]
local key = base .. 'c:' .. cid
local ids = redis.call('HGET', key, 'm')
local groups, seen = {}, {}
if ids then
  for id in string.gmatch(ids, '%S+') do
    local mkey = base .. 'm:' .. id
    local found = redis.call('HMGET', mkey, 'k', 's', 'g', 'f')
    if found[1] == cid then
      redis.call('HSET', mkey, 'k', '', 'x', '0')
      if found[3] then
        redis.call('ZREM', base .. 'gheld', id)
        if not seen[found[3]] then
          seen[found[3]] = true
          groups[#groups + 1] = found[3]
        end
      elseif redis.call('ZREM', base .. 'held', id) == 1 then
        redis.call('ZADD', base .. 'free', found[2], id)
        if found[4] then
          fair_index(base, id, found[2], found[4])
        end
      end
    end
  end
  redis.call('DEL', key)
end
redis.call('ZREM', base .. 'claims', cid)
if redis.call('ZSCORE', base .. 'fhx', cid) then
  fair_drop(base, cid)
end
for _, group in ipairs(groups) do
  settle_group(base, group, ARGV[2])
end
return 0
