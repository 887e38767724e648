-- Shared helpers. KEYS: 1 jobs (id -> job JSON), 2 nrt (id -> next run time,
-- microseconds; absent when paused), 3 lease (id -> "until|owner"),
-- 4 ver (id -> version), 5 due (sorted set: id scored by when it can be claimed).
local K_JOBS, K_NRT, K_LEASE, K_VER, K_DUE = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function lease_of(id)
  local l = redis.call('HGET', K_LEASE, id)
  if not l then return nil, nil end
  local u, o = string.match(l, '^(%d+)|(.*)$')
  return tonumber(u), o
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
  redis.call('HDEL', K_JOBS, id)
  redis.call('HDEL', K_NRT, id)
  redis.call('HDEL', K_LEASE, id)
  redis.call('HDEL', K_VER, id)
  redis.call('ZREM', K_DUE, id)
end
