-- ARGV: prefix, owner, until (microseconds), then run ids. Extends the owner's
-- running runs; returns how many it changed.
local owner, untl = ARGV[2], ARGV[3]
if not is_int(untl) then
  return redis.error_reply('heartbeat_runs: malformed heartbeat time')
end
local ids = {}
for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
local texts = hmget(K_DATA, ids)
local set, scores, seen = {}, {}, {}
local n = 0
for i, id in ipairs(ids) do
  local r = decode(texts[i])
  if r and r.state == 'running' and r.owner == owner then
    n = n + 1
    if not seen[id] then
      seen[id] = true
      r.heartbeat = untl
      set[#set + 1] = id
      set[#set + 1] = cjson.encode(r)
      scores[#scores + 1] = untl
      scores[#scores + 1] = id
    end
  end
end
bulk('HSET', K_DATA, set)
bulk('ZADD', K_HEARTBEATS, scores)
return n
