-- A user's sessions, counted per node (chatd/redis/session_counts.py): claim a place for a
-- new one under `[auth] max_sessions_per_user`, give one back, or count them.
--
-- KEYS[1] nodes   set of the nodes (nodes.py)   KEYS[2] this node's sessions: user -> count
-- ARGV[1] 'claim', 'release', 'elsewhere' or 'rooms'   ARGV[2] the user (for 'rooms' as the
-- rooms know them, else as counted)   ARGV[3] the limit (claim)
-- ARGV[4] this node   ARGV[5] the prefix of a node's keys (`chatd:node:`)
--
-- The other nodes' counts are read from keys built here, not passed in KEYS: which nodes
-- there are is only known inside the script. (Node-wide keys already need one primary.) A
-- node whose lease has run out is not counted: its sessions are gone with its connections,
-- and nodes.py deletes its counts when it lets go of the node. This node is always counted.
--
-- Returns {allowed (1 or 0), the user's sessions on live nodes afterwards} for 'claim'; their
-- sessions on the other live nodes for 'elsewhere'; this node's count left for 'release';
-- {room, display name, ...} of the rooms the other live nodes hold the user in for 'rooms'.
local what, user = ARGV[1], ARGV[2]
if what == 'release' then
  local left = redis.call('HINCRBY', KEYS[2], user, -1)
  if left <= 0 then
    redis.call('HDEL', KEYS[2], user)
  end
  return left
end
if what == 'rooms' then
  local found = {}
  local suffix = ' ' .. user
  for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if node ~= ARGV[4] and redis.call('EXISTS', ARGV[5] .. node .. ':alive') == 1 then
      local held = redis.call('HGETALL', ARGV[5] .. node .. ':held')
      for i = 1, #held, 2 do
        local entry = held[i]
        if #entry > #suffix and string.sub(entry, -#suffix) == suffix then
          found[#found + 1] = string.sub(entry, 1, #entry - #suffix)
          found[#found + 1] = held[i + 1]
        end
      end
    end
  end
  return found
end
local elsewhere = 0
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if node ~= ARGV[4] and redis.call('EXISTS', ARGV[5] .. node .. ':alive') == 1 then
    elsewhere = elsewhere + tonumber(redis.call('HGET', ARGV[5] .. node .. ':sessions', user) or '0')
  end
end
if what == 'elsewhere' then
  return elsewhere
end
local total = elsewhere + tonumber(redis.call('HGET', KEYS[2], user) or '0')
if total >= tonumber(ARGV[3]) then
  return {0, total}
end
redis.call('HINCRBY', KEYS[2], user, 1)
redis.call('SADD', KEYS[1], ARGV[4])
return {1, total + 1}
