-- Last step of a dead-letter move on a Redis Cluster, once the messages are copied into the
-- dead-letter queue (dead_letter_copy.lua): forget them in the source queue. Idempotent.
-- KEYS: source queue prefix. ARGV: ids.
local base = KEYS[1]
for i = 1, #ARGV do
  redis.call('DEL', base .. 'd:' .. ARGV[i])
  redis.call('ZREM', base .. 'moving', ARGV[i])
end
return 0
