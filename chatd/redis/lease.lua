-- The archiver's lease (chatd/redis/archiver.py): one node at a time writes the transcripts.
-- Taken with SET NX PX when no one holds it, renewed only by its holder: compare and renew in
-- one step, so that a node whose lease expired and was taken over never renews the new one's.
--
-- KEYS[1] the lease
-- ARGV[1] this node   ARGV[2] the lease's length in ms; '0' releases it if this node holds it
--
-- Returns the node that holds the lease after the call (false: no one, after a release).
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return false
  end
  return holder
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
  return ARGV[1]
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return holder
