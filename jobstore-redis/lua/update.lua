-- ARGV: id, job JSON, next run time ('' = paused), version read. Keeps the
-- lease, bumps the version. Returns 1, 0 (no such job) or -1 (version changed).
-- A version that is not an integer (a corrupted record, read back as 0) is
-- replaced: an update rewrites every field, and lifts a quarantine.
local id, job, nrt, read = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HEXISTS', K_JOBS, id) == 0 then return 0 end
local cur = redis.call('HGET', K_VER, id) or '0'
if not string.match(cur, '^%d+$') then cur = '0' end
if cur ~= read then return -1 end
redis.call('HSET', K_JOBS, id, job)
redis.call('HSET', K_VER, id, tostring(tonumber(cur) + 1))
if nrt == '' then redis.call('HDEL', K_NRT, id) else redis.call('HSET', K_NRT, id, nrt) end
redis.call('HDEL', K_QUARANTINE, id)
rescore(id)
return 1
