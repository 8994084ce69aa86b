-- End a claim: the messages it still holds become claimable at once. Idempotent.
-- KEYS: queue prefix. ARGV: claim id.
local base, cid = KEYS[1], ARGV[1]
local key = base .. 'c:' .. cid
local ids = redis.call('HGET', key, 'm')
if ids then
  for id in string.gmatch(ids, '%S+') do
    local mkey = base .. 'm:' .. id
    if redis.call('HGET', mkey, 'k') == cid then
      redis.call('HSET', mkey, 'k', '', 'x', '0')
      if redis.call('ZREM', base .. 'held', id) == 1 then
        redis.call('ZADD', base .. 'free', redis.call('HGET', mkey, 's'), id)
      end
    end
  end
  redis.call('DEL', key)
end
redis.call('ZREM', base .. 'claims', cid)
return 0
