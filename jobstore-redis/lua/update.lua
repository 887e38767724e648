-- ARGV: id, job JSON, next run time ('' = paused), version read. Keeps the
-- lease, bumps the version. Returns 1, 0 (no such job) or -1 (version changed).
local id, job, nrt, read = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HEXISTS', K_JOBS, id) == 0 then return 0 end
if (redis.call('HGET', K_VER, id) or '0') ~= read then return -1 end
redis.call('HSET', K_JOBS, id, job)
redis.call('HINCRBY', K_VER, id, 1)
if nrt == '' then redis.call('HDEL', K_NRT, id) else redis.call('HSET', K_NRT, id, nrt) end
rescore(id)
return 1
