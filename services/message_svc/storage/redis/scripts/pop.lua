-- Take and delete up to limit of the oldest claimable messages (those with a group by the
-- group rules, as claim.lua).
-- KEYS: queue prefix. ARGV: now, limit. Returns the rows, as they were.
local base = KEYS[1]
local now, limit = ARGV[1], tonumber(ARGV[2])
local popped = {}
take(base, now, limit, function(row)
  remove_message(base, row[ID], row[GROUP], row[FAIR])
  popped[#popped + 1] = row
  return true
end)
return popped
