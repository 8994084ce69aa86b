-- Store pending deliveries whose subscription exists, due now.
-- ARGV: P, now, then 8 values per delivery: id, subscription id, project, queue, subscriber,
--       options (JSON), kind, document
-- Returns how many were stored.

local now = ARGV[2]
local stored = 0
for i = 3, #ARGV, 8 do
    local id, sid = ARGV[i], ARGV[i + 1]
    if redis.call('EXISTS', skey(sid)) == 1 then
        redis.call('HSET', P .. ':d:' .. id, 'subscription_id', sid, 'project', ARGV[i + 2],
            'queue', ARGV[i + 3], 'subscriber', ARGV[i + 4], 'options', ARGV[i + 5],
            'kind', ARGV[i + 6], 'document', ARGV[i + 7], 'attempts', '0', 'created', now)
        schedule(ARGV[i + 4], id, now)
        redis.call('SADD', P .. ':ds:' .. sid, id)
        stored = stored + 1
    end
end
return stored
