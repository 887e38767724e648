-- ARGV: now, owner, lease until, limit (times in microseconds), then the ids
-- of jobs to pass over (left for other schedulers).
-- Claims due, unleased (or lease-expired) jobs. Every field is checked before
-- anything is written: a job with a corrupted field is quarantined instead of
-- claimed, so that one bad record cannot stop the others. Reads and writes the
-- batch's fields with one command per hash. Returns two lists: id, job, nrt,
-- version per claimed job; id, reason per quarantined job.
local now, owner, untl, limit = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local skip = {}
for i = 5, #ARGV do skip[ARGV[i]] = true end
local ids = redis.call('ZRANGEBYSCORE', K_DUE, '-inf', now, 'LIMIT', 0, limit + #ARGV - 4)
local cand = {}
for _, id in ipairs(ids) do
  if #cand >= limit then break end
  if not skip[id] then cand[#cand + 1] = id end
end
local out, bad = {}, {}
if #cand == 0 then return {out, bad} end
local nrts, vers = hmget(K_NRT, cand), hmget(K_VER, cand)
local leases, jobs = hmget(K_LEASE, cand), hmget(K_JOBS, cand)
local lease_text = untl .. '|' .. owner
local set_lease, set_ver, set_due = {}, {}, {}
for i, id in ipairs(cand) do
  local nrt, v, job = nrts[i], vers[i], jobs[i]
  local why = corruption_of(nrt, v, job)
  if why then
    quarantine(id, why)
    bad[#bad + 1] = id
    bad[#bad + 1] = why
  else
    local u = parse_lease(leases[i])
    if nrt and tonumber(nrt) <= now and (not u or u <= now) then
      local nv = string.format('%d', (tonumber(v) or 0) + 1)
      set_lease[#set_lease + 1] = id
      set_lease[#set_lease + 1] = lease_text
      set_ver[#set_ver + 1] = id
      set_ver[#set_ver + 1] = nv
      set_due[#set_due + 1] = untl
      set_due[#set_due + 1] = id
      out[#out + 1] = id
      out[#out + 1] = job
      out[#out + 1] = nrt
      out[#out + 1] = nv
    end
  end
end
bulk('HSET', K_LEASE, set_lease)
bulk('HSET', K_VER, set_ver)
bulk('ZADD', K_DUE, set_due)
return {out, bad}
