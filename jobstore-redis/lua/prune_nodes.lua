-- Deletes registrations that lapsed before a time; returns how many.
-- KEYS: nodes, node_leases; ARGV: before (us)
local all = redis.call('HGETALL', KEYS[2])
local before = tonumber(ARGV[1])
local n = 0
for i = 1, #all, 2 do
  local sep = string.find(all[i + 1], '|', 1, true)
  local expires = sep and tonumber(string.sub(all[i + 1], 1, sep - 1))
  if not expires or expires < before then
    redis.call('HDEL', KEYS[2], all[i])
    redis.call('HDEL', KEYS[1], all[i])
    n = n + 1
  end
end
return n
