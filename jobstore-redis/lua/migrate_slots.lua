-- ARGV: prefix, then slots ('<job id>:<scheduled>:<attempt>') still kept as
-- string keys '{P}:slot:<slot>' of the first layout. Moves each into the slot
-- hash (unless the slot is held there already) and deletes the key.
for i = 2, #ARGV do
  local key = P .. 'slot:' .. ARGV[i]
  local id = redis.call('GET', key)
  if id then redis.call('HSETNX', K_SLOTS, ARGV[i], id) end
  redis.call('DEL', key)
end
return #ARGV - 1
