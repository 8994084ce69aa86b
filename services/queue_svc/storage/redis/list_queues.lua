-- One stretch of a project's queues in name order: the names after a marker that contain a
-- substring, each with its metadata when asked for. Read-only; one consistent snapshot.
--
-- KEYS[1]  hash of the project's queues: name -> metadata (JSON text)
-- KEYS[2]  sorted set of the project's queue names, all with score 0
-- ARGV[1]  exclusive lower bound: only names sorting after it ('' = from the first name)
-- ARGV[2]  stop after this many matching names
-- ARGV[3]  substring the names must contain, literally ('' = every name)
-- ARGV[4]  '1' to return each name's metadata, '0' for names only
-- ARGV[5]  stop after examining this many names, matching or not (bounds the script's time)
--
-- Returns {resume, name, [metadata,] name, [metadata,] ...}: `resume` is the last name
-- examined, to pass as ARGV[1] of the next call, or '' when every name has been examined.

local after, want, needle = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local with_metadata, budget = ARGV[4] == '1', tonumber(ARGV[5])
local batch = math.min(budget, 256)
local result = {''}
local found, examined = 0, 0

while true do
    local low = '-'
    if after ~= '' then
        low = '(' .. after
    end
    local names = redis.call('ZRANGEBYLEX', KEYS[2], low, '+', 'LIMIT', 0, batch)
    for _, name in ipairs(names) do
        examined = examined + 1
        if needle == '' or string.find(name, needle, 1, true) then
            if with_metadata then
                local metadata = redis.call('HGET', KEYS[1], name)
                if metadata then
                    result[#result + 1] = name
                    result[#result + 1] = metadata
                    found = found + 1
                end
            else
                result[#result + 1] = name
                found = found + 1
            end
        end
        if found >= want or examined >= budget then
            result[1] = name
            return result
        end
    end
    if #names < batch then
        return result
    end
    after = names[#names]
end
