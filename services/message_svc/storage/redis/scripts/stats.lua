-- {total, claimed, oldest row or false, newest row or false} of the unexpired messages.
-- KEYS: queue prefix. ARGV: now.
local base, now = KEYS[1], ARGV[1]
local now_n = tonumber(now)
local total = redis.call('ZCOUNT', base .. 'exp', '(' .. now, '+inf')
-- A live claim's messages outlive it (claims extend them), so every held id with a live
-- claim is an unexpired message.
local claimed = redis.call('ZCOUNT', base .. 'held', '(' .. now, '+inf')
  + redis.call('ZCOUNT', base .. 'gheld', '(' .. now, '+inf')

local function first_live(command)
  local start = 0
  while true do
    local ids = redis.call(command, base .. 'all', start, start + 49)
    for _, id in ipairs(ids) do
      local row = read_message(base, id)
      if row and tonumber(row[EXPIRES]) > now_n then
        return row
      end
    end
    if #ids < 50 then
      return false
    end
    start = start + 50
  end
end

if total == 0 then
  return {0, 0, false, false}
end
return {total, claimed, first_live('ZRANGE'), first_live('ZREVRANGE')}
