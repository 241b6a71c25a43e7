-- Record how far a room's transcript is durable (chatd/redis/archiver.py), after its write
-- and fsync: set the cursor, trim the stream below what it must keep for joins and resumes,
-- and take the room off the work list unless an event came meanwhile. One script, so that a
-- post's SADD (post.lua) between reading the room's seq and the SREM is never lost.
--
-- KEYS[1] archived  string "EPOCH SEQ"        KEYS[2] log    stream, entry id = seq
-- KEYS[3] meta      hash: epoch, seq           KEYS[4] unarchived  set of rooms with work
-- KEYS[5] the archiver's lease
-- ARGV[1] this node   ARGV[2] the epoch archived ('': Redis had none)
-- ARGV[3] the last seq of that epoch in the transcript (0: none)   ARGV[4] events to keep
-- ARGV[5] the room
--
-- Returns -1 if this node no longer holds the lease (nothing done), 1 if the room has no
-- work left, 0 if it has (newer events, or a new epoch begun meanwhile).
if redis.call('GET', KEYS[5]) ~= ARGV[1] then
  return -1
end
local epoch = redis.call('HGET', KEYS[3], 'epoch')
if not epoch then
  redis.call('SREM', KEYS[4], ARGV[5])  -- no epoch, no event: the next post adds it again
  return 1
end
if epoch ~= ARGV[2] then
  return 0  -- the stream holds another epoch's events now: trim none of them
end
local seq = tonumber(ARGV[3])
if seq > 0 then
  redis.call('SET', KEYS[1], epoch .. ' ' .. seq)
  local below = seq - tonumber(ARGV[4]) + 1
  if below > 1 then
    redis.call('XTRIM', KEYS[2], 'MINID', below .. '-0')
  end
end
if tonumber(redis.call('HGET', KEYS[3], 'seq')) <= seq then
  redis.call('SREM', KEYS[4], ARGV[5])
  return 1
end
return 0
