-- Lease the given deliveries that are still due (compare-and-set on the due time).
-- ARGV: P, now, until, delivery ids...
-- Returns {id, fields, id, fields, ...} of the deliveries leased.

local now = tonumber(ARGV[2])
local result = {}
for i = 4, #ARGV do
    local id = ARGV[i]
    local due = redis.call('ZSCORE', P .. ':due', id)
    if due and tonumber(due) <= now then
        local fields = redis.call('HGETALL', P .. ':d:' .. id)
        if #fields > 0 then
            redis.call('ZADD', P .. ':due', ARGV[3], id)
            result[#result + 1] = id
            result[#result + 1] = fields
        else
            redis.call('ZREM', P .. ':due', id)
        end
    end
end
return result
