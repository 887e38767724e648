-- ARGV: prefix, owner, then per run (4 each): id, state, finished, error ('' for
-- none or '=' .. text). Finishes the owner's running or interrupted runs; returns
-- how many it changed.
local owner = ARGV[2]
if (#ARGV - 2) % 4 ~= 0 then
  return redis.error_reply('finish_runs: malformed arguments')
end
local ids = {}
for i = 3, #ARGV, 4 do
  if not (ARGV[i + 1] ~= '' and is_int(ARGV[i + 2]) and is_opt(ARGV[i + 3])) then
    return redis.error_reply('finish_runs: malformed arguments for run ' .. ARGV[i])
  end
  ids[#ids + 1] = ARGV[i]
end
local texts = hmget(K_DATA, ids)
-- Decoded once per id and changed in place, so that an id given twice sees
-- the first change.
local recs, changed, order = {}, {}, {}
for i, id in ipairs(ids) do
  if recs[id] == nil then recs[id] = decode(texts[i]) or false end
end
local n = 0
local heartbeats, deltas = {}, {}
for i = 3, #ARGV, 4 do
  local id, state, finished, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], opt(ARGV[i + 3])
  local r = recs[id]
  if r and r.owner == owner and (r.state == 'running' or r.state == 'interrupted') then
    local was = r.state
    r.state, r.finished, r.heartbeat = state, finished, nil
    -- Only an interrupted run has an error to clear.
    if err ~= nil then r.error = err elseif was == 'interrupted' then r.error = nil end
    if not changed[id] then
      changed[id] = true
      order[#order + 1] = id
    end
    heartbeats[#heartbeats + 1] = id
    if was == 'running' and state ~= 'running' and r.job_id then
      deltas[r.job_id] = (deltas[r.job_id] or 0) - 1
    end
    n = n + 1
  end
end
local set = {}
for _, id in ipairs(order) do
  set[#set + 1] = id
  set[#set + 1] = cjson.encode(recs[id])
end
bulk('HSET', K_DATA, set)
bulk('ZREM', K_HEARTBEATS, heartbeats)
add_running(deltas)
return n
