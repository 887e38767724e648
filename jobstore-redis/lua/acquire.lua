-- ARGV: now, owner, lease until, limit (times in microseconds), then the ids
-- of jobs to pass over (left for other schedulers).
-- Claims due, unleased (or lease-expired) jobs. Every field is checked before
-- anything is written: a job with a corrupted field is quarantined instead of
-- claimed, so that one bad record cannot stop the others. Returns two lists:
-- id, job, nrt, version per claimed job; id, reason per quarantined job.
local now, owner, untl, limit = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local skip = {}
for i = 5, #ARGV do skip[ARGV[i]] = true end
local ids = redis.call('ZRANGEBYSCORE', K_DUE, '-inf', now, 'LIMIT', 0, limit + #ARGV - 4)
local out = {}
local bad = {}
local taken = 0
for _, id in ipairs(ids) do
  if taken >= limit then break end
  if not skip[id] then
    taken = taken + 1
    local why = corruption(id)
    if why then
      quarantine(id, why)
      table.insert(bad, id)
      table.insert(bad, why)
    else
      local nrt = redis.call('HGET', K_NRT, id)
      local u = lease_of(id)
      if nrt and tonumber(nrt) <= now and (not u or u <= now) then
        redis.call('HSET', K_LEASE, id, untl .. '|' .. owner)
        local v = redis.call('HINCRBY', K_VER, id, 1)
        redis.call('ZADD', K_DUE, tonumber(untl), id)
        table.insert(out, id)
        table.insert(out, redis.call('HGET', K_JOBS, id))
        table.insert(out, nrt)
        table.insert(out, tostring(v))
      end
    end
  end
end
return {out, bad}
