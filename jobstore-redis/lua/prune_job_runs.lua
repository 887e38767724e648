-- ARGV: prefix, job id, start, count, before (microseconds). Looks at the
-- job's runs from position `start` of its newest-first index (the runs before
-- it are kept), at most `count` of them, and deletes those scheduled before
-- `before` that are not running. Returns {deleted, looked at, kept}: bounded
-- work per call, so that a long history is pruned without blocking the server.
local job, start, count, before = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not (is_int(start) and is_int(count) and is_int(before)) then
  return redis.error_reply('prune_job_runs: malformed arguments')
end
local first = tonumber(start)
local page = redis.call('ZREVRANGE', jobruns_key(job), first, first + tonumber(count) - 1, 'WITHSCORES')
local old, kept = {}, 0
for i = 1, #page, 2 do
  if tonumber(page[i + 1]) < tonumber(before) then old[#old + 1] = page[i] else kept = kept + 1 end
end
local deleted, running, gone = delete_finished_runs(old)
-- Index entries without a record leave too.
bulk('ZREM', jobruns_key(job), gone)
return {deleted, #page / 2, kept + running}
