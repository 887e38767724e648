-- ARGV: id, job JSON, next run time ('' = paused). Keeps the lease, bumps the version.
local id, job, nrt = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HEXISTS', K_JOBS, id) == 0 then return 0 end
redis.call('HSET', K_JOBS, id, job)
redis.call('HINCRBY', K_VER, id, 1)
if nrt == '' then redis.call('HDEL', K_NRT, id) else redis.call('HSET', K_NRT, id, nrt) end
rescore(id)
return 1
