-- Record a failed attempt of a delivery that still exists.
-- ARGV: P, id, due, attempts
-- Returns 1 when rescheduled, 0 when the delivery is gone.

if redis.call('EXISTS', P .. ':d:' .. ARGV[2]) == 0 then
    return 0
end
redis.call('HSET', P .. ':d:' .. ARGV[2], 'attempts', ARGV[4])
redis.call('ZADD', P .. ':due', ARGV[3], ARGV[2])
return 1
