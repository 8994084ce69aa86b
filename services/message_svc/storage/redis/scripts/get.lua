-- The unexpired messages among the ids given (each id once), in the order given.
-- KEYS: queue prefix. ARGV: now, ids...
local base = KEYS[1]
local now_n = tonumber(ARGV[1])
local found = {}
for i = 2, #ARGV do
  local row = read_message(base, ARGV[i])
  if row and tonumber(row[EXPIRES]) > now_n then
    found[#found + 1] = row
  end
end
return found
