-- Shared helpers of the run-ledger scripts.
-- KEYS: 1 runs (sorted set: run id scored by scheduled time, microseconds),
--       2 heartbeats (sorted set: running run id scored by heartbeat, microseconds).
-- ARGV[1]: the key prefix '{P}:' under which the per-run, per-slot and per-job
-- keys below are built (same hash tag as KEYS, so one cluster slot):
--   {P}:run:<id>                           hash: job_id, scheduled, attempt, state,
--                                          owner, node, started, finished,
--                                          heartbeat, error (absent field = none)
--   {P}:slot:<job id>:<scheduled>:<attempt> string: the run id holding the slot
--   {P}:running:<job id>                   set: ids of the job's running runs
--   {P}:jobruns:<job id>                   sorted set: the job's run ids by scheduled time
--   {P}:runjobs                            set: ids of jobs that have a jobruns index
local K_RUNS, K_HEARTBEATS = KEYS[1], KEYS[2]
local P = ARGV[1]
local K_RUNJOBS = P .. 'runjobs'

local function run_key(id) return P .. 'run:' .. id end
local function slot_key(job, scheduled, attempt)
  return P .. 'slot:' .. job .. ':' .. scheduled .. ':' .. attempt
end
local function running_key(job) return P .. 'running:' .. job end
local function jobruns_key(job) return P .. 'jobruns:' .. job end

-- An optional argument: '' is none, '=' .. value is value.
local function opt(v)
  if v == nil or v == '' then return nil end
  return string.sub(v, 2)
end

-- Whether v is an optional argument ('' or '=' .. anything).
local function is_opt(v)
  return v == '' or string.sub(v, 1, 1) == '='
end

-- Whether v is a decimal integer (times in microseconds, attempts, limits).
local function is_int(v)
  return type(v) == 'string' and string.match(v, '^%-?%d+$') ~= nil
end

-- Whether v is an optional integer argument.
local function is_opt_int(v)
  return v == '' or (is_opt(v) and is_int(string.sub(v, 2)))
end

-- {id, {field, value, ...}} of a stored run.
local function run_entry(id)
  return {id, redis.call('HGETALL', run_key(id))}
end

-- Deletes a run that is not running, with its slot key and index entries;
-- returns 1 if it deleted it.
local function delete_finished_run(id)
  local key = run_key(id)
  local cur = redis.call('HMGET', key, 'state', 'job_id', 'scheduled', 'attempt')
  if cur[1] == 'running' then return 0 end
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
  return redis.call('DEL', key)
end
