-- A read marker in Redis mode (chatd/read_markers.py): it never moves back within an epoch.
--
-- KEYS[1] the room's reads hash
-- ARGV[1] user   ARGV[2] epoch   ARGV[3] seq   ARGV[4] ts (POSIX seconds)
--
-- Returns the marker in force after the call: `EPOCH SEQ TS`.
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local epoch, seq = string.match(current, '^(%S+) (%d+)')
  if epoch == ARGV[2] and tonumber(seq) >= tonumber(ARGV[3]) then
    return current
  end
end
local marker = ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4]
redis.call('HSET', KEYS[1], ARGV[1], marker)
return marker
