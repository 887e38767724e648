-- ARGV: n, then per job: id, job JSON, next run time ('' = paused).
-- All or none: returns {'conflict', id} if any id exists or repeats.
local n = tonumber(ARGV[1])
local ids, seen = {}, {}
for i = 0, n - 1 do
  local id = ARGV[2 + i * 3]
  if seen[id] then return {'conflict', id} end
  seen[id] = true
  ids[#ids + 1] = id
end
local present = hmget(K_JOBS, ids)
for i, id in ipairs(ids) do
  if present[i] then
    return {'conflict', id}
  end
end
local jobs, vers, nrts, due = {}, {}, {}, {}
for i = 0, n - 1 do
  local id, job, nrt = ARGV[2 + i * 3], ARGV[3 + i * 3], ARGV[4 + i * 3]
  jobs[#jobs + 1] = id
  jobs[#jobs + 1] = job
  vers[#vers + 1] = id
  vers[#vers + 1] = 0
  if nrt ~= '' then
    nrts[#nrts + 1] = id
    nrts[#nrts + 1] = nrt
    due[#due + 1] = nrt
    due[#due + 1] = id
  end
end
bulk('HSET', K_JOBS, jobs)
bulk('HSET', K_VER, vers)
bulk('HSET', K_NRT, nrts)
bulk('ZADD', K_DUE, due)
return {'ok'}
