-- ARGV: prefix, before (microseconds). Deletes runs scheduled before `before`
-- that are not running, with their slot keys and index entries; returns how many.
local before = ARGV[2]
if not is_int(before) then
  return redis.error_reply('prune_runs: malformed arguments')
end
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_RUNS, '-inf', '(' .. before)) do
  local key = run_key(id)
  local cur = redis.call('HMGET', key, 'state', 'job_id', 'scheduled', 'attempt')
  if cur[1] ~= 'running' then
    if cur[2] then
      redis.call('ZREM', jobruns_key(cur[2]), id)
      redis.call('SREM', running_key(cur[2]), id)
      if cur[3] and cur[4] then
        local slot = slot_key(cur[2], cur[3], cur[4])
        if redis.call('GET', slot) == id then redis.call('DEL', slot) end
      end
    end
    redis.call('ZREM', K_HEARTBEATS, id)
    redis.call('ZREM', K_RUNS, id)
    n = n + redis.call('DEL', key)
  end
end
return n
