-- Sequence one room event: the heart of chatd's Redis mode (chatd/redis/sequencer.py).
--
-- KEYS[1] meta     hash: epoch, seq              KEYS[2] log    stream, entry id = seq
-- KEYS[3] retry    string: the seq of a sent id  KEYS[4] count  hash: user -> nodes holding them
-- KEYS[5] names    hash: user -> display name    KEYS[6] held   hash: "room user" -> name, of a node
-- KEYS[7] unarchived  set of rooms the archiver has work in
-- KEYS[8] rooms    sorted set: every room Redis has given an epoch
-- ARGV[1] the line's head, up to the epoch      ARGV[2] the line's tail, after the seq
-- ARGV[3] an epoch for a room Redis does not know yet
-- ARGV[4] retry window in ms (0: not a retryable message)
-- ARGV[5] presence change: 0 none, 1 join, -1 leave   ARGV[6] user   ARGV[7] display name
-- ARGV[8] the room   ARGV[9] the room's channel
-- ARGV[10] an assignment (support desk): '' none, else 'A' and the assignee it sets
-- ARGV[11] '1' if the assignment is a claim: it holds only while nobody else is assigned
--
-- Returns {epoch, seq, stored}: stored 1 for a new event; 0 with the earlier seq for a retry;
-- 0 with seq 0 for a presence change that is not the user's first or last node in the room;
-- 0 with seq -1 for a claim on a conversation someone else is assigned to (meta `assignee`).
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('DEL', KEYS[2])  -- a log left from a lost epoch would refuse seq 1
  redis.call('ZADD', KEYS[8], 0, ARGV[8])
end
if ARGV[4] ~= '0' then
  local earlier = redis.call('GET', KEYS[3])
  if earlier then
    return {epoch, tonumber(earlier), 0}
  end
end
local change = ARGV[5]
local held = ARGV[8] .. ' ' .. ARGV[6]
if change == '1' then
  if redis.call('HSETNX', KEYS[6], held, ARGV[7]) == 0 then
    return {epoch, 0, 0}
  end
  redis.call('HSET', KEYS[5], ARGV[6], ARGV[7])
  if redis.call('HINCRBY', KEYS[4], ARGV[6], 1) > 1 then
    return {epoch, 0, 0}
  end
elseif change == '-1' then
  if redis.call('HDEL', KEYS[6], held) == 0 then
    return {epoch, 0, 0}
  end
  if redis.call('HINCRBY', KEYS[4], ARGV[6], -1) > 0 then
    return {epoch, 0, 0}
  end
  redis.call('HDEL', KEYS[4], ARGV[6])
  redis.call('HDEL', KEYS[5], ARGV[6])
end
local assigns = ARGV[10]
if assigns ~= '' then
  local current = redis.call('HGET', KEYS[1], 'assignee')
  if ARGV[11] == '1' and current and current ~= 'A' and current ~= assigns then
    return {epoch, -1, 0}
  end
  redis.call('HSET', KEYS[1], 'assignee', assigns)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local line = ARGV[1] .. '"epoch":"' .. epoch .. '","seq":' .. seq .. ',' .. ARGV[2]
redis.call('XADD', KEYS[2], seq .. '-0', 'e', line)
if ARGV[4] ~= '0' then
  redis.call('SET', KEYS[3], seq, 'PX', ARGV[4])
end
redis.call('SADD', KEYS[7], ARGV[8])
redis.call('PUBLISH', ARGV[9], line)
return {epoch, seq, 1}
