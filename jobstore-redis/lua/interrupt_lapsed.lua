-- ARGV: prefix, now (microseconds), limit, error text. Marks up to limit running
-- runs whose heartbeat is before now as interrupted, earliest heartbeat first;
-- returns {id, record JSON} of each as stored.
local now, limit, err = ARGV[2], tonumber(ARGV[3]), ARGV[4]
if not is_int(now) or limit == nil then
  return redis.error_reply('interrupt_lapsed: malformed arguments')
end
local out = {}
while #out < limit do
  local ids = redis.call('ZRANGEBYSCORE', K_HEARTBEATS, '-inf', '(' .. now, 'LIMIT', 0, limit - #out)
  if #ids == 0 then break end
  -- Every fetched id leaves the set, so the loop ends; entries whose run is no
  -- longer running are stale and just dropped.
  bulk('ZREM', K_HEARTBEATS, ids)
  local texts = hmget(K_DATA, ids)
  local set, deltas = {}, {}
  for i, id in ipairs(ids) do
    local r = decode(texts[i])
    if r and r.state == 'running' then
      r.state, r.finished, r.error, r.heartbeat = 'interrupted', now, err, nil
      local text = cjson.encode(r)
      set[#set + 1] = id
      set[#set + 1] = text
      if r.job_id then deltas[r.job_id] = (deltas[r.job_id] or 0) - 1 end
      out[#out + 1] = {id, text}
    end
  end
  bulk('HSET', K_DATA, set)
  add_running(deltas)
end
return out
