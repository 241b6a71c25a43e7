"""Read markers in Redis mode: one hash per room (`Keys.reads`), written by read.lua so that a
marker never moves back, whichever node writes it. Every node holding a room has its markers
from the room's snapshot (sync.lua) and hears each new one as the room's sessions do (a `read`
frame on the room's channel, `Pipeline.tell_room`); the journal of the single-process mode is
not used, so that nodes never append to and compact one file together.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatd.redis.client import RedisError, RedisLink, Script
from chatd.redis.keys import Keys

READ = Script("read")


def parse_marker(value: str) -> tuple[str, int, float]:
    """(epoch, seq, ts) of a stored marker; raises ValueError if it is not one."""
    epoch, seq, ts = value.split(" ")
    return epoch, int(seq), float(ts)


class SharedReadMarkers:
    def __init__(self, commands: RedisLink, keys: Keys):
        self._commands = commands
        self._keys = keys

    def store(self, entries: list[tuple[str, str, str, int, float]]) -> Deferred:
        """Store (room, user, epoch, seq, ts) markers; fires once Redis has them all (so
        after its fsync), or fails with the first error."""
        calls = [
            ([self._keys.reads(room)], [user, epoch, seq, repr(ts)])
            for room, user, epoch, seq, ts in entries
        ]

        def checked(outcomes: list) -> None:
            for ok, value in outcomes:
                if not ok:
                    raise value if isinstance(value, Exception) else RedisError(str(value))

        return self._commands.run_many(READ, calls).addCallback(checked)
