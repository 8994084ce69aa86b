-- Remove a delivery (delivered or given up).
-- ARGV: P, id

local key = P .. ':d:' .. ARGV[2]
local f = redis.call('HMGET', key, 'subscription_id', 'subscriber')
local sid = f[1]
redis.call('DEL', key)
unschedule(f[2], ARGV[2])
if sid then
    redis.call('SREM', P .. ':ds:' .. sid, ARGV[2])
end
return 1
