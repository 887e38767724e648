-- ARGV: n, then per job: id, job JSON, next run time ('' = paused).
-- All or none: returns {'conflict', id} if any id exists or repeats.
local n = tonumber(ARGV[1])
local seen = {}
for i = 0, n - 1 do
  local id = ARGV[2 + i * 3]
  if seen[id] or redis.call('HEXISTS', K_JOBS, id) == 1 then
    return {'conflict', id}
  end
  seen[id] = true
end
for i = 0, n - 1 do
  local id, job, nrt = ARGV[2 + i * 3], ARGV[3 + i * 3], ARGV[4 + i * 3]
  redis.call('HSET', K_JOBS, id, job)
  redis.call('HSET', K_VER, id, 0)
  if nrt ~= '' then
    redis.call('HSET', K_NRT, id, nrt)
    redis.call('ZADD', K_DUE, tonumber(nrt), id)
  end
end
return {'ok'}
