-- The earliest time after now at which a delayed message becomes visible, a live claim
-- expires or a message group may give messages again (a score as stored, exact), or false
-- when there is none.
-- KEYS: queue prefix. ARGV: now.
local base, now = KEYS[1], ARGV[1]
local earliest = false
-- gwait holds when groups held by a claim or behind a delayed head may give messages again.
for _, index in ipairs({'delayed', 'claims', 'gwait'}) do
  local found = redis.call('ZRANGEBYSCORE', base .. index, '(' .. now, '+inf', 'WITHSCORES',
                           'LIMIT', 0, 1)
  if found[2] and (not earliest or tonumber(found[2]) < tonumber(earliest)) then
    earliest = found[2]
  end
end
return earliest
