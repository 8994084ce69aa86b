-- Delete the given messages; one held by a live claim only when its claim is among the given
-- claim ids, or when no claim ids are given at all. Returns how many unexpired ones went.
-- KEYS: queue prefix. ARGV: now, number of claim ids (-1 = none given), claim ids..., ids...
local base = KEYS[1]
local now_n, ncids = tonumber(ARGV[1]), tonumber(ARGV[2])
local allowed = {}
for i = 3, 2 + math.max(ncids, 0) do
  allowed[ARGV[i]] = true
end
local deleted = 0
local groups, seen = {}, {}
for i = 3 + math.max(ncids, 0), #ARGV do
  local id = ARGV[i]
  local found = redis.call('HMGET', base .. 'm:' .. id, 'e', 'k', 'x', 'g', 'f')
  if found[1] and tonumber(found[1]) > now_n
      and (ncids < 0 or tonumber(found[3]) <= now_n or allowed[found[2]]) then
    local held = tonumber(found[3]) > now_n
    remove_message(base, id, found[4], found[5], held)
    if found[5] and held then
      fair_forget(base, found[2], found[5])
    end
    deleted = deleted + 1
    if found[4] and not seen[found[4]] then
      seen[found[4]] = true
      groups[#groups + 1] = found[4]
    end
  end
end
for _, group in ipairs(groups) do
  settle_group(base, group, ARGV[1])
end
return deleted
