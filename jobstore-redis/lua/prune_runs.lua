-- ARGV: prefix, before (microseconds). Deletes runs scheduled before `before`
-- that are not running, with their slot keys and index entries; returns how many.
local before = ARGV[2]
if not is_int(before) then
  return redis.error_reply('prune_runs: malformed arguments')
end
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_RUNS, '-inf', '(' .. before)) do
  n = n + delete_finished_run(id)
end
return n
