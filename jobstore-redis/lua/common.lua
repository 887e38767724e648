-- Shared helpers. KEYS: 1 jobs (id -> job JSON), 2 nrt (id -> next run time,
-- microseconds; absent when paused), 3 lease (id -> "until|owner"),
-- 4 ver (id -> version), 5 due (sorted set: id scored by when it can be claimed).
local K_JOBS, K_NRT, K_LEASE, K_VER, K_DUE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
-- Jobs taken out of the due set because a field was corrupted: id -> why.
-- Built from the jobs key ('{P}:jobs'), so it shares its hash tag.
local K_QUARANTINE = string.sub(K_JOBS, 1, -5) .. 'quarantine'

-- The lease text 'until|owner' split: until (a number) and owner, or nil, nil.
local function parse_lease(l)
  if not l then return nil, nil end
  local u, o = string.match(l, '^(%d+)|(.*)$')
  return tonumber(u), o
end

local function lease_of(id)
  return parse_lease(redis.call('HGET', K_LEASE, id))
end

-- Re-score a job in the due set: next run time, or lease expiry if later; out when paused.
local function rescore(id)
  local nrt = redis.call('HGET', K_NRT, id)
  if not nrt then
    redis.call('ZREM', K_DUE, id)
    return
  end
  local score = tonumber(nrt)
  local u = lease_of(id)
  if u and u > score then score = u end
  redis.call('ZADD', K_DUE, score, id)
end

local function delete_job(id)
  redis.call('HDEL', K_QUARANTINE, id)
  redis.call('HDEL', K_JOBS, id)
  redis.call('HDEL', K_NRT, id)
  redis.call('HDEL', K_LEASE, id)
  redis.call('HDEL', K_VER, id)
  redis.call('ZREM', K_DUE, id)
end

-- Why a job's stored fields cannot be used (nil when they can): the next run
-- time and version must be integers and the job JSON present.
local function corruption_of(nrt, v, job)
  if nrt and not string.match(nrt, '^%-?%d+$') then
    return 'next run time ' .. string.format('%q', nrt) .. ' is not an integer'
  end
  if v and not string.match(v, '^%d+$') then
    return 'version ' .. string.format('%q', v) .. ' is not an integer'
  end
  if not job then
    return 'job JSON is missing'
  end
  return nil
end

-- Takes a corrupted job out of the due set (its fields stay for inspection);
-- updating or removing the job clears it.
local function quarantine(id, why)
  redis.call('ZREM', K_DUE, id)
  redis.call('HSET', K_QUARANTINE, id, why)
end
