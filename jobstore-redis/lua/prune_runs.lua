-- ARGV: prefix, before (microseconds), skip, limit. Looks at up to `limit` runs
-- scheduled before `before`, oldest first, past the first `skip` of them (runs
-- an earlier call kept because they are running), and deletes those that are
-- not running, with their slot keys and index entries. Returns {deleted,
-- looked at}: bounded work per call, so that a long history is pruned without
-- blocking the server.
local before, skip, limit = ARGV[2], ARGV[3], ARGV[4]
if not (is_int(before) and is_int(skip) and is_int(limit)) then
  return redis.error_reply('prune_runs: malformed arguments')
end
local ids = redis.call('ZRANGEBYSCORE', K_RUNS, '-inf', '(' .. before, 'LIMIT', skip, limit)
local n = 0
for _, id in ipairs(ids) do
  n = n + delete_finished_run(id)
end
return {n, #ids}
