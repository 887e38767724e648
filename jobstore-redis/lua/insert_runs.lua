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
    state = ARGV[b + 4], owner = ARGV[b + 5], node = ARGV[b + 6], started = ARGV[b + 7],
    finished = ARGV[b + 8], heartbeat = ARGV[b + 9], error = ARGV[b + 10], max = ARGV[b + 11],
  }
  if not (is_int(r.scheduled) and is_int(r.attempt) and r.state ~= ''
      and is_opt(r.owner) and is_opt(r.node) and is_opt(r.error)
      and is_opt_int(r.started) and is_opt_int(r.finished) and is_opt_int(r.heartbeat)
      and (r.max == '' or is_int(r.max))) then
    return redis.error_reply('insert_runs: malformed arguments for run ' .. r.id)
  end
  r.owner, r.node, r.error = opt(r.owner), opt(r.node), opt(r.error)
  r.started, r.finished, r.heartbeat = opt(r.started), opt(r.finished), opt(r.heartbeat)
  table.insert(runs, r)
end

-- Each limited job's running runs, counted once before any of this call's inserts.
local count = {}
for _, r in ipairs(runs) do
  if r.state == 'running' and r.max ~= '' and count[r.job] == nil then
    count[r.job] = redis.call('SCARD', running_key(r.job))
  end
end

local out = {}
for _, r in ipairs(runs) do
  local slot, key = slot_key(r.job, r.scheduled, r.attempt), run_key(r.id)
  -- The slot key is the arbiter: set only if absent (a run id already stored
  -- under another slot is refused too, and its slot left free).
  local won = redis.call('SET', slot, r.id, 'NX')
  if won and redis.call('EXISTS', key) == 1 then
    redis.call('DEL', slot)
    won = false
  end
  if not won then
    table.insert(out, 'duplicate')
  else
    local state, finished, heartbeat = r.state, r.finished, r.heartbeat
    if state == 'running' and r.max ~= '' and count[r.job] >= math.max(tonumber(r.max), 1) then
      state, finished, heartbeat = 'skipped', r.started, nil
    end
    local fields = {'job_id', r.job, 'scheduled', r.scheduled, 'attempt', r.attempt, 'state', state}
    local optional = {
      {'owner', r.owner}, {'node', r.node}, {'started', r.started},
      {'finished', finished}, {'heartbeat', heartbeat}, {'error', r.error},
    }
    for _, f in ipairs(optional) do
      if f[2] ~= nil then
        table.insert(fields, f[1])
        table.insert(fields, f[2])
      end
    end
    redis.call('HSET', key, unpack(fields))
    redis.call('ZADD', K_RUNS, r.scheduled, r.id)
    redis.call('ZADD', jobruns_key(r.job), r.scheduled, r.id)
    if state == 'running' then
      redis.call('SADD', running_key(r.job), r.id)
      if heartbeat ~= nil then
        redis.call('ZADD', K_HEARTBEATS, heartbeat, r.id)
      end
    end
    table.insert(out, state)
  end
end
return out
