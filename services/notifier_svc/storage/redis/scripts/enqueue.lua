-- Store pending deliveries whose subscription exists, due now.
-- KEYS: the four of every script, then 4 keys per delivery: its subscription's B:s:<id>, its
--       own B:d:<id>, its subscriber's lane B:ld:<subscriber> and its subscription's B:ds:<id>.
-- ARGV: B, now, then 8 values per delivery: id, subscription id, project, queue, subscriber,
--       options (JSON), kind, document
-- Returns how many were stored. A delivery whose id is stored already is not stored again: a
-- call sent again after its connection failed (Redis had run it) stores nothing twice.

local now = ARGV[2]
local stored = 0
for i = 3, #ARGV, 8 do
    local k = 5 + (i - 3) / 8 * 4
    local s, d, ld, ds = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
    local id, sid = ARGV[i], ARGV[i + 1]
    if redis.call('EXISTS', d) == 1 then
        stored = stored + 1
    elseif redis.call('EXISTS', s) == 1 then
        redis.call('HSET', d, 'subscription_id', sid, 'project', ARGV[i + 2],
            'queue', ARGV[i + 3], 'subscriber', ARGV[i + 4], 'options', ARGV[i + 5],
            'kind', ARGV[i + 6], 'document', ARGV[i + 7], 'attempts', '0', 'created', now)
        schedule(ARGV[i + 4], id, now, ld)
        redis.call('SADD', ds, id)
        stored = stored + 1
    end
end
return stored
