-- A room as a node takes it on (chatd/redis/feeds.py): read its epoch, seq, members and
-- latest events at one instant. The node has subscribed to the room's channel first, so
-- every event after this snapshot reaches it there.
--
-- KEYS[1] meta   KEYS[2] log   KEYS[3] names   KEYS[4] reads (read markers)
-- KEYS[5] sanctions (bans and mutes in force)   KEYS[6] rooms (sorted set of every room)
-- ARGV[1] how many of the latest events   ARGV[2] an epoch to create the room with ('': none)
-- ARGV[3] the room's name
--
-- Returns {epoch, seq, {user, name, ...}, {line, ...}, {user, marker, ...}, {user, sanctions,
-- ...}}, or {false} for a room Redis does not know and may not create.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[2] == '' then
    return {false}
  end
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('DEL', KEYS[2])  -- a log left from a lost epoch would refuse seq 1
  redis.call('ZADD', KEYS[6], 0, ARGV[3])
end
local seq = redis.call('HGET', KEYS[1], 'seq')
local lines = {}
local count = tonumber(ARGV[1])
if count > 0 then
  local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', count)
  for i = #entries, 1, -1 do
    lines[#lines + 1] = entries[i][2][2]
  end
end
return {
  epoch, tonumber(seq), redis.call('HGETALL', KEYS[3]), lines,
  redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5])
}
