-- Helpers for commands over many fields or keys, shared by every script.
-- Lua's unpack is limited to a few thousand values: bulk commands go in slices
-- of this many arguments (a multiple of 1, 2 and 3, so pairs and triples stay whole).
local SLICE = 6000

-- Calls cmd on key with args (a list), in slices; nothing when args is empty.
local function bulk(cmd, key, args)
  for i = 1, #args, SLICE do
    redis.call(cmd, key, unpack(args, i, math.min(i + SLICE - 1, #args)))
  end
end

-- HMGET of many fields, in slices: one value (or false) per field, in order.
local function hmget(key, fields)
  local out = {}
  for i = 1, #fields, SLICE do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + SLICE - 1, #fields)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

-- Appends values to the list under key k of table t (the lists of a command
-- per key, such as one ZADD per job).
local function push(t, k, ...)
  local list = t[k]
  if not list then
    list = {}
    t[k] = list
  end
  for _, v in ipairs({...}) do list[#list + 1] = v end
end
