-- Up to limit unexpired messages with seq > after, by seq, filtered before the page is cut.
-- KEYS: queue prefix.
-- ARGV: now, limit, after ('-inf' = from the start), include claimed ('1'/'0'),
--       include delayed ('1'/'0'), client id whose messages are left out ('' = none).
local base = KEYS[1]
local now, limit, after = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local with_claimed, with_delayed, hidden = ARGV[4] == '1', ARGV[5] == '1', ARGV[6]
local now_n = tonumber(now)

-- The plain listing reads free, which normalize() makes exact; the others, and every listing
-- of a queue with message groups (whose messages are never in free), read every message.
local source = base .. 'all'
if not with_claimed and not with_delayed and not has_groups(base) then
  normalize(base, now)
  source = base .. 'free'
end

local page = {}
local from = after == '-inf' and '-inf' or '(' .. after
local chunk = limit
while #page < limit do
  local found = redis.call('ZRANGEBYSCORE', source, from, '+inf', 'WITHSCORES', 'LIMIT', 0, chunk)
  for i = 1, #found, 2 do
    from = '(' .. found[i + 1]
    local row = read_message(base, found[i])
    if row and tonumber(row[EXPIRES]) > now_n
        and (with_claimed or tonumber(row[CLAIM_EXP]) <= now_n)
        and (with_delayed or tonumber(row[VISIBLE]) <= now_n)
        and (hidden == '' or row[CLIENT] ~= hidden) then
      page[#page + 1] = row
      if #page == limit then
        break
      end
    end
  end
  if #found < 2 * chunk then
    break
  end
  chunk = 100
end
return page
