-- The earliest time after now at which a delayed message becomes visible or a live claim
-- expires (a score as stored, exact), or false when there is neither.
-- KEYS: queue prefix. ARGV: now.
local base, now = KEYS[1], ARGV[1]
local earliest = false
for _, index in ipairs({'delayed', 'claims'}) do
  local found = redis.call('ZRANGEBYSCORE', base .. index, '(' .. now, '+inf', 'WITHSCORES',
                           'LIMIT', 0, 1)
  if found[2] and (not earliest or tonumber(found[2]) < tonumber(earliest)) then
    earliest = found[2]
  end
end
return earliest
