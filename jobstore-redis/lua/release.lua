-- ARGV: owner, then per job: id, version, kind ('R' reschedule, 'D' remove,
-- 'U' unclaim), next run time ('' = paused). Returns one word per job:
-- applied, superseded, lost or gone.
-- The batch's fields are read with one command per hash, the items applied in
-- order to what was read (an id may appear twice), and the changed jobs written
-- back with one command per hash.
local owner = ARGV[1]
if (#ARGV - 1) % 4 ~= 0 then
  return redis.error_reply('release: malformed arguments')
end
local ids, first = {}, {}
for i = 2, #ARGV, 4 do
  local id = ARGV[i]
  if not first[id] then
    first[id] = true
    ids[#ids + 1] = id
  end
end
if #ids == 0 then return {} end
local vers, nrts = hmget(K_VER, ids), hmget(K_NRT, ids)
local leases, jobs = hmget(K_LEASE, ids), hmget(K_JOBS, ids)
-- The state of every job of the batch, changed as the items are applied.
local st = {}
for i, id in ipairs(ids) do
  st[id] = {exists = jobs[i] ~= false, ver = vers[i], nrt = nrts[i], lease = leases[i], dirty = false}
end
local out = {}
for i = 2, #ARGV, 4 do
  local id, version, kind, nrt = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local s = st[id]
  if not s.exists then
    out[#out + 1] = 'gone'
  else
    local _, o = parse_lease(s.lease)
    if o ~= owner then
      out[#out + 1] = 'lost'
    elseif tonumber(s.ver) ~= version then
      s.lease, s.dirty = false, true
      out[#out + 1] = 'superseded'
    else
      if kind == 'D' then
        s.exists = false
      else
        if kind == 'R' then
          if nrt == '' then s.nrt = false else s.nrt = nrt end
        end
        s.lease = false
        s.ver = string.format('%d', (tonumber(s.ver) or 0) + 1)
      end
      s.dirty = true
      out[#out + 1] = 'applied'
    end
  end
end
-- Write back the changed jobs.
local deleted, set_nrt, del_nrt, set_lease, del_lease, set_ver, set_due, del_due =
  {}, {}, {}, {}, {}, {}, {}, {}
for _, id in ipairs(ids) do
  local s = st[id]
  if s.dirty then
    if not s.exists then
      deleted[#deleted + 1] = id
    else
      if s.nrt then
        set_nrt[#set_nrt + 1] = id
        set_nrt[#set_nrt + 1] = s.nrt
      else
        del_nrt[#del_nrt + 1] = id
      end
      if s.lease then
        set_lease[#set_lease + 1] = id
        set_lease[#set_lease + 1] = s.lease
      else
        del_lease[#del_lease + 1] = id
      end
      if s.ver then
        set_ver[#set_ver + 1] = id
        set_ver[#set_ver + 1] = s.ver
      end
      -- Due at the next run time, or at the lease's expiry if later; not at all
      -- when paused (or when the next run time is unreadable).
      -- Only a whole number of microseconds is a score (ZADD refuses the
      -- rest that tonumber accepts, such as ' 5' or 'nan').
      local nrt = s.nrt and string.match(s.nrt, '^%-?%d+$') and tonumber(s.nrt)
      if nrt then
        local score = s.nrt
        local u = parse_lease(s.lease)
        if u and u > nrt then score = string.format('%d', u) end
        set_due[#set_due + 1] = score
        set_due[#set_due + 1] = id
      else
        del_due[#del_due + 1] = id
      end
    end
  end
end
bulk('HDEL', K_QUARANTINE, deleted)
bulk('HDEL', K_JOBS, deleted)
bulk('HDEL', K_NRT, deleted)
bulk('HDEL', K_LEASE, deleted)
bulk('HDEL', K_VER, deleted)
bulk('ZREM', K_DUE, deleted)
bulk('HSET', K_NRT, set_nrt)
bulk('HDEL', K_NRT, del_nrt)
bulk('HSET', K_LEASE, set_lease)
bulk('HDEL', K_LEASE, del_lease)
bulk('HSET', K_VER, set_ver)
bulk('ZADD', K_DUE, set_due)
bulk('ZREM', K_DUE, del_due)
return out
