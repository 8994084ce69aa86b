-- Delete one message honouring claims; returns the outcome's name.
-- KEYS: queue prefix. ARGV: now, message id, claim id ('' = none given).
local base = KEYS[1]
local now_n, id, cid = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local found = redis.call('HMGET', base .. 'm:' .. id, 'e', 'k', 'x', 'g', 'f')
if not found[1] or tonumber(found[1]) <= now_n then
  return 'absent'
end
local holder = nil
if tonumber(found[3]) > now_n then
  holder = found[2]
end
if cid == '' then
  if holder then
    return 'claimed'
  end
elseif not holder then
  return 'not_claimed'
elseif holder ~= cid then
  return 'claimed_by_other'
end
remove_message(base, id, found[4], found[5], holder ~= nil)
if holder and found[5] then
  fair_forget(base, holder, found[5])
end
if found[4] then
  settle_group(base, found[4], ARGV[1])
end
return 'deleted'
