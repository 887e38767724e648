-- Shared helpers of the run-ledger scripts.
-- KEYS: 1 runs (sorted set: run id scored by scheduled time, microseconds),
--       2 heartbeats (sorted set: running run id scored by heartbeat, microseconds).
-- ARGV[1]: the key prefix '{P}:' under which the keys below are built (same hash
-- tag as KEYS, so one cluster slot):
--   {P}:rundata          hash: run id -> the run as a JSON object of strings (job_id,
--                        scheduled, attempt, state, owner, node, started, finished,
--                        heartbeat, error; an absent member is none)
--   {P}:runslots         hash: '<job id>:<scheduled>:<attempt>' -> the run id holding it
--   {P}:running          hash: job id -> how many of its runs are running
--   {P}:jobruns:<job id> sorted set: the job's run ids by scheduled time
local K_RUNS, K_HEARTBEATS = KEYS[1], KEYS[2]
local P = ARGV[1]
local K_DATA, K_SLOTS, K_RUNNING = P .. 'rundata', P .. 'runslots', P .. 'running'

local function slot_field(job, scheduled, attempt)
  return job .. ':' .. scheduled .. ':' .. attempt
end
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

-- A stored run decoded, or nil when it is missing or unreadable.
local function decode(text)
  if not text then return nil end
  local ok, r = pcall(cjson.decode, text)
  if ok and type(r) == 'table' then return r end
  return nil
end

-- Appends a value to the list under key k of table t.
local function push(t, k, v)
  local list = t[k]
  if not list then
    list = {}
    t[k] = list
  end
  list[#list + 1] = v
end

-- Adds deltas (job id -> change) to the running counts; a count that reaches
-- zero is removed.
local function add_running(deltas)
  local jobs = {}
  for job in pairs(deltas) do jobs[#jobs + 1] = job end
  if #jobs == 0 then return end
  local cur = hmget(K_RUNNING, jobs)
  local set, del = {}, {}
  for i, job in ipairs(jobs) do
    local n = (tonumber(cur[i]) or 0) + deltas[job]
    if n > 0 then
      set[#set + 1] = job
      set[#set + 1] = string.format('%d', n)
    else
      del[#del + 1] = job
    end
  end
  bulk('HSET', K_RUNNING, set)
  bulk('HDEL', K_RUNNING, del)
end

-- Deletes the runs among ids that are not running, with their slots and index
-- entries (ids without a record just leave the indexes). Returns how many
-- records it deleted, how many running runs it kept, and the ids it took out.
local function delete_finished_runs(ids)
  if #ids == 0 then return 0, 0, {} end
  local texts = hmget(K_DATA, ids)
  local gone, slots, slot_ids, by_job = {}, {}, {}, {}
  local deleted, kept = 0, 0
  for i, id in ipairs(ids) do
    local r = decode(texts[i])
    if r and r.state == 'running' then
      kept = kept + 1
    else
      gone[#gone + 1] = id
      if texts[i] then deleted = deleted + 1 end
      if r and r.job_id then
        push(by_job, r.job_id, id)
        if r.scheduled and r.attempt then
          slots[#slots + 1] = slot_field(r.job_id, r.scheduled, r.attempt)
          slot_ids[#slot_ids + 1] = id
        end
      end
    end
  end
  -- A slot is freed only if it is still held by the deleted run.
  local holders, free = hmget(K_SLOTS, slots), {}
  for i, slot in ipairs(slots) do
    if holders[i] == slot_ids[i] then free[#free + 1] = slot end
  end
  bulk('HDEL', K_SLOTS, free)
  bulk('HDEL', K_DATA, gone)
  bulk('ZREM', K_RUNS, gone)
  bulk('ZREM', K_HEARTBEATS, gone)
  for job, list in pairs(by_job) do bulk('ZREM', jobruns_key(job), list) end
  return deleted, kept, gone
end
