-- ARGV: prefix, now (microseconds), limit, error text. Marks up to limit running
-- runs whose heartbeat is before now as interrupted, earliest heartbeat first;
-- returns {id, {field, value, ...}} of each as stored.
local now, limit, err = ARGV[2], tonumber(ARGV[3]), ARGV[4]
if not is_int(now) or limit == nil then
  return redis.error_reply('interrupt_lapsed: malformed arguments')
end
local out = {}
while #out < limit do
  local ids = redis.call('ZRANGEBYSCORE', K_HEARTBEATS, '-inf', '(' .. now, 'LIMIT', 0, limit - #out)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    -- Every fetched id leaves the set, so the loop ends; entries whose run is no
    -- longer running are stale and just dropped.
    redis.call('ZREM', K_HEARTBEATS, id)
    local key = run_key(id)
    local cur = redis.call('HMGET', key, 'state', 'job_id')
    if cur[1] == 'running' then
      redis.call('HSET', key, 'state', 'interrupted', 'finished', now, 'error', err)
      redis.call('HDEL', key, 'heartbeat')
      if cur[2] then
        redis.call('SREM', running_key(cur[2]), id)
      end
      table.insert(out, run_entry(id))
    end
  end
end
return out
