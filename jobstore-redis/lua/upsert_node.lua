-- Registers or renews a node under its owner id, unless another instance holds
-- a live registration; then returns that registration's JSON.
-- KEYS: nodes (owner -> JSON), node_leases (owner -> "expires|instance")
-- ARGV: owner, instance, expires (us), now (us), JSON
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if sep then
    local expires = tonumber(string.sub(cur, 1, sep - 1))
    local instance = string.sub(cur, sep + 1)
    local held = redis.call('HGET', KEYS[1], ARGV[1])
    if held and instance ~= ARGV[2] and expires and expires > tonumber(ARGV[4]) then
      return held
    end
  end
  -- A registration that cannot be read (no record, a malformed lease) is
  -- taken over like a lapsed one.
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. '|' .. ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
return false
