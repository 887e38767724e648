-- ARGV: prefix, owner, until (microseconds), then run ids. Extends the owner's
-- running runs; returns how many it changed.
local owner, untl = ARGV[2], ARGV[3]
if not is_int(untl) then
  return redis.error_reply('heartbeat_runs: malformed heartbeat time')
end
local n = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = run_key(id)
  local cur = redis.call('HMGET', key, 'state', 'owner')
  if cur[1] == 'running' and cur[2] == owner then
    redis.call('HSET', key, 'heartbeat', untl)
    redis.call('ZADD', K_HEARTBEATS, untl, id)
    n = n + 1
  end
end
return n
