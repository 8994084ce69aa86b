-- Remove a delivery (delivered or given up).
-- ARGV: P, id

local key = P .. ':d:' .. ARGV[2]
local sid = redis.call('HGET', key, 'subscription_id')
redis.call('DEL', key)
redis.call('ZREM', P .. ':due', ARGV[2])
if sid then
    redis.call('SREM', P .. ':ds:' .. sid, ARGV[2])
end
return 1
