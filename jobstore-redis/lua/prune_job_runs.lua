-- ARGV: prefix, job id, start, count, before (microseconds). Looks at the
-- job's runs from position `start` of its newest-first index (the runs before
-- it are kept), at most `count` of them, and deletes those scheduled before
-- `before` that are not running. Returns {deleted, looked at}: bounded work
-- per call, so that a long history is pruned without blocking the server.
local job, start, count, before = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not (is_int(start) and is_int(count) and is_int(before)) then
  return redis.error_reply('prune_job_runs: malformed arguments')
end
local limit = tonumber(before)
local first = tonumber(start)
local ids = redis.call('ZREVRANGE', jobruns_key(job), first, first + tonumber(count) - 1)
local n = 0
for _, id in ipairs(ids) do
  local scheduled = redis.call('HGET', run_key(id), 'scheduled')
  if scheduled and tonumber(scheduled) and tonumber(scheduled) < limit then
    n = n + delete_finished_run(id)
  end
end
return {n, #ids}
