-- Remove a delivery (delivered or given up).
-- KEYS: the four of every script, then the delivery (B:d:<id>).
-- ARGV: B, id

local key = KEYS[5]
local f = redis.call('HMGET', key, 'subscription_id', 'subscriber')
local sid = f[1]
redis.call('DEL', key)
unschedule(f[2], ARGV[2])
if sid then
    redis.call('SREM', ds_key(sid), ARGV[2])
end
return 1
