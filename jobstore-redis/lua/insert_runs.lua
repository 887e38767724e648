-- ARGV: prefix, then per run (12 each): id, job id, scheduled, attempt, state,
-- owner, node, started, finished, heartbeat, error, max_instances.
-- Times are microseconds. owner, node, started, finished, heartbeat and error are
-- '' for none or '=' .. value; max_instances is '' for none.
-- Returns one word per run: the state it was stored in, or 'duplicate'.
local N = 12
local nargs = #ARGV - 1
if nargs % N ~= 0 then
  return redis.error_reply('insert_runs: ' .. nargs .. ' arguments is not a multiple of ' .. N)
end

-- Validate every run before writing anything.
local runs = {}
for b = 2, #ARGV, N do
  local r = {
    id = ARGV[b], job = ARGV[b + 1], scheduled = ARGV[b + 2], attempt = ARGV[b + 3],
    state = ARGV[b + 4], owner = opt(ARGV[b + 5]), node = opt(ARGV[b + 6]),
    started = opt(ARGV[b + 7]), finished = opt(ARGV[b + 8]), heartbeat = opt(ARGV[b + 9]),
    error = opt(ARGV[b + 10]), max = ARGV[b + 11],
  }
  if not (is_int(r.scheduled) and is_int(r.attempt) and r.state ~= ''
      and is_opt(ARGV[b + 5]) and is_opt(ARGV[b + 6]) and is_opt(ARGV[b + 10])
      and is_opt(ARGV[b + 7]) and is_opt(ARGV[b + 8]) and is_opt(ARGV[b + 9])
      and (r.started == nil or is_int(r.started))
      and (r.finished == nil or is_int(r.finished))
      and (r.heartbeat == nil or is_int(r.heartbeat))
      and (r.max == '' or is_int(r.max))) then
    return redis.error_reply('insert_runs: malformed arguments for run ' .. r.id)
  end
  runs[#runs + 1] = r
end

-- Each limited job's running runs, counted once before any of this call's inserts.
local count, limited = {}, {}
for _, r in ipairs(runs) do
  if r.state == 'running' and r.max ~= '' and count[r.job] == nil then
    count[r.job] = 0
    limited[#limited + 1] = r.job
  end
end
local counts = hmget(K_RUNNING, limited)
for i, job in ipairs(limited) do count[job] = tonumber(counts[i]) or 0 end

-- The slots are the arbiter: one read for the batch (the script is atomic, so
-- nothing can take a slot between this read and the writes below). A run id
-- already stored (under any slot) is refused too.
local slots, ids = {}, {}
for i, r in ipairs(runs) do
  slots[i] = slot_field(r.job, r.scheduled, r.attempt)
  ids[i] = r.id
end
local held, stored = hmget(K_SLOTS, slots), hmget(K_DATA, ids)

local out = {}
local taken, used = {}, {}
local set_data, set_slot, all_runs, heartbeats, by_job, running = {}, {}, {}, {}, {}, {}
for i, r in ipairs(runs) do
  local slot = slots[i]
  if held[i] or stored[i] or taken[slot] or used[r.id] then
    out[#out + 1] = 'duplicate'
  else
    taken[slot], used[r.id] = true, true
    local state, finished, heartbeat = r.state, r.finished, r.heartbeat
    if state == 'running' and r.max ~= '' and count[r.job] >= math.max(tonumber(r.max), 1) then
      state, finished, heartbeat = 'skipped', r.started, nil
    end
    local rec = {
      job_id = r.job, scheduled = r.scheduled, attempt = r.attempt, state = state,
      owner = r.owner, node = r.node, started = r.started, finished = finished,
      heartbeat = heartbeat, error = r.error,
    }
    set_data[#set_data + 1] = r.id
    set_data[#set_data + 1] = cjson.encode(rec)
    set_slot[#set_slot + 1] = slot
    set_slot[#set_slot + 1] = r.id
    all_runs[#all_runs + 1] = r.scheduled
    all_runs[#all_runs + 1] = r.id
    push(by_job, r.job, r.scheduled)
    push(by_job, r.job, r.id)
    if state == 'running' then
      running[r.job] = (running[r.job] or 0) + 1
      if heartbeat ~= nil then
        heartbeats[#heartbeats + 1] = heartbeat
        heartbeats[#heartbeats + 1] = r.id
      end
    end
    out[#out + 1] = state
  end
end
bulk('HSET', K_DATA, set_data)
bulk('HSET', K_SLOTS, set_slot)
bulk('ZADD', K_RUNS, all_runs)
bulk('ZADD', K_HEARTBEATS, heartbeats)
for job, entries in pairs(by_job) do bulk('ZADD', jobruns_key(job), entries) end
add_running(running)
return out
