-- ARGV: prefix, then the ids of runs kept in the first layout (one hash
-- '{P}:run:<id>' per run, a string key per slot, a set of running run ids per
-- job). Moves each into the current layout and deletes its old keys; returns
-- how many it moved. Safe to repeat and to run from several processes: a run
-- already moved has no old hash left.
local moved, deltas = 0, {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = P .. 'run:' .. id
  local flat = redis.call('HGETALL', key)
  if #flat > 0 then
    local r = {}
    for j = 1, #flat, 2 do r[flat[j]] = flat[j + 1] end
    if redis.call('HEXISTS', K_DATA, id) == 0 then
      if r.state ~= 'running' then r.heartbeat = nil end
      redis.call('HSET', K_DATA, id, cjson.encode(r))
      if r.job_id and r.scheduled and r.attempt then
        local slot = slot_field(r.job_id, r.scheduled, r.attempt)
        local old_slot = P .. 'slot:' .. slot
        if redis.call('GET', old_slot) == id then redis.call('DEL', old_slot) end
        redis.call('HSETNX', K_SLOTS, slot, id)
      end
      if r.state == 'running' and r.job_id then
        deltas[r.job_id] = (deltas[r.job_id] or 0) + 1
      end
      moved = moved + 1
    end
    redis.call('DEL', key)
  end
end
add_running(deltas)
return moved
