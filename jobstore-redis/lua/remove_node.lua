-- Deletes a node's registration if the given instance holds it.
-- KEYS: nodes, node_leases; ARGV: owner, instance
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if sep and string.sub(cur, sep + 1) == ARGV[2] then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('HDEL', KEYS[1], ARGV[1])
  end
end
return 0
