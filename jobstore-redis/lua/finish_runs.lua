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
local heartbeats, running = {}, {}
for i = 3, #ARGV, 4 do
  local id, state, finished, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], opt(ARGV[i + 3])
  local key = run_key(id)
  local cur = redis.call('HMGET', key, 'state', 'owner', 'job_id', 'error')
  if cur[2] == owner and (cur[1] == 'running' or cur[1] == 'interrupted') then
    -- The heartbeat field is left as it is: it is read only while running.
    if err ~= nil then
      redis.call('HSET', key, 'state', state, 'finished', finished, 'error', err)
    else
      redis.call('HSET', key, 'state', state, 'finished', finished)
      -- An error left from before (an interrupted run's) is cleared.
      if cur[4] then redis.call('HDEL', key, 'error') end
    end
    heartbeats[#heartbeats + 1] = id
    if state ~= 'running' and cur[3] then
      push(running, cur[3], id)
    end
    n = n + 1
  end
end
bulk('ZREM', K_HEARTBEATS, heartbeats)
for job, ids in pairs(running) do bulk('SREM', running_key(job), ids) end
return n
