-- ARGV: prefix, then job ids. Takes out of the set of jobs with runs those
-- whose run index is gone (every run pruned); returns how many. Checked here,
-- not by the caller, so that a run inserted meanwhile keeps its job listed.
local n = 0
for i = 2, #ARGV do
  if redis.call('EXISTS', jobruns_key(ARGV[i])) == 0 then
    n = n + redis.call('SREM', K_RUNJOBS, ARGV[i])
  end
end
return n
