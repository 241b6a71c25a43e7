-- A member's new display name (chatd/redis/renames.py), in the rooms where a node holds them:
-- what `joined` and `who` list on the nodes that take those rooms on later, and what the
-- node's `leave` events will carry if it dies.
--
-- KEYS[1] the node's held   KEYS[2..n] each room's names
-- ARGV[1] the user   ARGV[2] the new name   ARGV[3..n+1] the rooms, in the order of KEYS[2..n]
--
-- Only entries that exist are changed: a member who left meanwhile stays gone.
local user, name = ARGV[1], ARGV[2]
for i = 2, #KEYS do
  local held = ARGV[i + 1] .. ' ' .. user
  if redis.call('HEXISTS', KEYS[1], held) == 1 then
    redis.call('HSET', KEYS[1], held, name)
  end
  if redis.call('HEXISTS', KEYS[i], user) == 1 then
    redis.call('HSET', KEYS[i], user, name)
  end
end
return #KEYS - 1
