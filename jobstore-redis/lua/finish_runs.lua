-- ARGV: prefix, owner, then per run (4 each): id, state, finished, error ('' for
-- none or '=' .. text). Finishes the owner's running or interrupted runs; returns
-- how many it changed.
local owner = ARGV[2]
if (#ARGV - 2) % 4 ~= 0 then
  return redis.error_reply('finish_runs: malformed arguments')
end
for i = 3, #ARGV, 4 do
  if not (ARGV[i + 1] ~= '' and is_int(ARGV[i + 2]) and is_opt(ARGV[i + 3])) then
    return redis.error_reply('finish_runs: malformed arguments for run ' .. ARGV[i])
  end
end
local n = 0
for i = 3, #ARGV, 4 do
  local id, state, finished, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], opt(ARGV[i + 3])
  local key = run_key(id)
  local cur = redis.call('HMGET', key, 'state', 'owner', 'job_id')
  if cur[2] == owner and (cur[1] == 'running' or cur[1] == 'interrupted') then
    if err ~= nil then
      redis.call('HSET', key, 'state', state, 'finished', finished, 'error', err)
      redis.call('HDEL', key, 'heartbeat')
    else
      redis.call('HSET', key, 'state', state, 'finished', finished)
      redis.call('HDEL', key, 'heartbeat', 'error')
    end
    redis.call('ZREM', K_HEARTBEATS, id)
    if state ~= 'running' and cur[3] then
      redis.call('SREM', running_key(cur[3]), id)
    end
    n = n + 1
  end
end
return n
