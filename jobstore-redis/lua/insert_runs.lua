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

-- Each limited job's running runs, counted once before any of this call's
-- inserts: one EXISTS over all their running sets first, since usually none
-- has a running run; counted one by one only when some do.
local count, limited = {}, {}
for _, r in ipairs(runs) do
  if r.state == 'running' and r.max ~= '' and count[r.job] == nil then
    count[r.job] = 0
    limited[#limited + 1] = running_key(r.job)
  end
end
local any_running = false
for i = 1, #limited, SLICE do
  if redis.call('EXISTS', unpack(limited, i, math.min(i + SLICE - 1, #limited))) > 0 then
    any_running = true
  end
end
if any_running then
  for job in pairs(count) do count[job] = redis.call('SCARD', running_key(job)) end
end

-- The slot keys are the arbiter: one read for the batch (the script is atomic,
-- so nothing can take a slot between this read and the writes below).
local slots = {}
for i, r in ipairs(runs) do slots[i] = slot_key(r.job, r.scheduled, r.attempt) end
local held = {}
for i = 1, #slots, SLICE do
  local part = redis.call('MGET', unpack(slots, i, math.min(i + SLICE - 1, #slots)))
  for j = 1, #part do held[#held + 1] = part[j] end
end
-- A run id already stored (under any slot) is refused too; checked one by one
-- only when some of the batch's ids exist.
local keys = {}
for i, r in ipairs(runs) do keys[i] = run_key(r.id) end
local some_exist = false
for i = 1, #keys, SLICE do
  if redis.call('EXISTS', unpack(keys, i, math.min(i + SLICE - 1, #keys))) > 0 then
    some_exist = true
  end
end

local out = {}
local taken, used = {}, {}
local set_slot, all_runs, heartbeats, by_job, running = {}, {}, {}, {}, {}
for i, r in ipairs(runs) do
  local slot, key = slots[i], keys[i]
  local won = not held[i] and not taken[slot] and not used[r.id]
  if won and some_exist and redis.call('EXISTS', key) == 1 then won = false end
  if not won then
    out[#out + 1] = 'duplicate'
  else
    taken[slot], used[r.id] = true, true
    local state, finished, heartbeat = r.state, r.finished, r.heartbeat
    if state == 'running' and r.max ~= '' and count[r.job] >= math.max(tonumber(r.max), 1) then
      state, finished, heartbeat = 'skipped', r.started, nil
    end
    local fields = {'job_id', r.job, 'scheduled', r.scheduled, 'attempt', r.attempt, 'state', state}
    local n = 8
    if r.owner then fields[n + 1], fields[n + 2], n = 'owner', r.owner, n + 2 end
    if r.node then fields[n + 1], fields[n + 2], n = 'node', r.node, n + 2 end
    if r.started then fields[n + 1], fields[n + 2], n = 'started', r.started, n + 2 end
    if finished then fields[n + 1], fields[n + 2], n = 'finished', finished, n + 2 end
    if heartbeat then fields[n + 1], fields[n + 2], n = 'heartbeat', heartbeat, n + 2 end
    if r.error then fields[n + 1], fields[n + 2], n = 'error', r.error, n + 2 end
    redis.call('HSET', key, unpack(fields))
    set_slot[#set_slot + 1] = slot
    set_slot[#set_slot + 1] = r.id
    all_runs[#all_runs + 1] = r.scheduled
    all_runs[#all_runs + 1] = r.id
    push(by_job, r.job, r.scheduled, r.id)
    if state == 'running' then
      push(running, r.job, r.id)
      if heartbeat ~= nil then
        heartbeats[#heartbeats + 1] = heartbeat
        heartbeats[#heartbeats + 1] = r.id
      end
    end
    out[#out + 1] = state
  end
end
for i = 1, #set_slot, SLICE do
  redis.call('MSET', unpack(set_slot, i, math.min(i + SLICE - 1, #set_slot)))
end
bulk('ZADD', K_RUNS, all_runs)
bulk('ZADD', K_HEARTBEATS, heartbeats)
local jobs = {}
for job, entries in pairs(by_job) do
  bulk('ZADD', jobruns_key(job), entries)
  jobs[#jobs + 1] = job
end
bulk('SADD', K_RUNJOBS, jobs)
for job, ids in pairs(running) do bulk('SADD', running_key(job), ids) end
return out
