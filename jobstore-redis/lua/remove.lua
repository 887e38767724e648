-- ARGV: id. Returns 1 if the job existed.
local id = ARGV[1]
if redis.call('HEXISTS', K_JOBS, id) == 0 then return 0 end
delete_job(id)
return 1
