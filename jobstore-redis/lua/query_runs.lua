-- ARGV: prefix, job ('' for every job or '=' .. job id), state ('' for any),
-- since (microseconds, '' for no bound), limit.
-- Returns {id, {field, value, ...}} of the matching runs, newest scheduled time
-- first: at least limit of them when there are, plus every further match with
-- the same scheduled time as the last one (the caller sorts ties and cuts).
local job, state, since, limit = opt(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
if not is_opt(ARGV[2]) or not (since == '' or is_int(since)) or limit == nil then
  return redis.error_reply('query_runs: malformed arguments')
end
local index = K_RUNS
if job ~= nil then index = jobruns_key(job) end
local min = '-inf'
if since ~= '' then min = since end
local out = {}
if limit <= 0 then return out end
local last = nil
local offset, batch = 0, 256
while true do
  local page = redis.call('ZREVRANGEBYSCORE', index, '+inf', min, 'WITHSCORES', 'LIMIT', offset, batch)
  for i = 1, #page, 2 do
    local id, score = page[i], page[i + 1]
    if #out >= limit and score ~= last then return out end
    local key = run_key(id)
    if state == '' or redis.call('HGET', key, 'state') == state then
      local fields = redis.call('HGETALL', key)
      if #fields > 0 then
        table.insert(out, {id, fields})
        last = score
      end
    end
  end
  if #page < 2 * batch then break end
  offset = offset + batch
end
return out
