-- Record a failed attempt of a delivery that still exists.
-- ARGV: P, id, due, attempts
-- Returns 1 when rescheduled, 0 when the delivery is gone.

local subscriber = redis.call('HGET', P .. ':d:' .. ARGV[2], 'subscriber')
if not subscriber then
    return 0
end
redis.call('HSET', P .. ':d:' .. ARGV[2], 'attempts', ARGV[4])
schedule(subscriber, ARGV[2], ARGV[3])
return 1
