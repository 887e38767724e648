-- ARGV: owner, then per job: id, version, kind ('R' reschedule, 'D' remove,
-- 'U' unclaim), next run time ('' = paused). Returns one word per job:
-- applied, superseded, lost or gone.
local owner = ARGV[1]
local out = {}
local i = 2
while i <= #ARGV do
  local id, version, kind, nrt = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  if redis.call('HEXISTS', K_JOBS, id) == 0 then
    table.insert(out, 'gone')
  else
    local _, o = lease_of(id)
    if o ~= owner then
      table.insert(out, 'lost')
    elseif tonumber(redis.call('HGET', K_VER, id)) ~= version then
      redis.call('HDEL', K_LEASE, id)
      rescore(id)
      table.insert(out, 'superseded')
    else
      if kind == 'D' then
        delete_job(id)
      else
        if kind == 'R' then
          if nrt == '' then redis.call('HDEL', K_NRT, id) else redis.call('HSET', K_NRT, id, nrt) end
        end
        redis.call('HDEL', K_LEASE, id)
        redis.call('HINCRBY', K_VER, id, 1)
        rescore(id)
      end
      table.insert(out, 'applied')
    end
  end
end
return out
