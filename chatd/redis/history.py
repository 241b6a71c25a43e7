"""`history` beyond a room's memory in Redis mode: from the room's stream, then the transcripts.

The stream holds what the archiver has not written yet (and the last `memory_events` it has),
so a page older than a node's memory is read from it newest first; where the stream ends (the
archiver trimmed it) the transcripts hold everything older. The stream keeps each line as it
was sent: the edits and deletions among the page and the room's memory are applied to it, as
the archiver applies them to the transcripts.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatd.events import Event
from chatd.redaction import revision_of
from chatd.redis.client import RedisLink
from chatd.redis.keys import Keys
from chatd.rooms import Room
from chatd.transcript import TranscriptStore


class StreamHistory:
    def __init__(self, commands: RedisLink, keys: Keys, store: TranscriptStore):
        self._commands = commands
        self._keys = keys
        self._store = store

    def before(self, room: Room, before: int, limit: int, roles: frozenset[str] | None) -> Deferred:
        """Fires with up to `limit` lines of the room's epoch with seq < `before`, oldest
        first (those `roles` may see)."""
        read = self._commands.execute(
            "XREVRANGE", self._keys.log(room.name), f"({before}-0", "-", "COUNT", limit
        )
        return read.addCallback(self._page, room, before, limit, roles)

    def _page(self, entries, room: Room, before: int, limit: int, roles) -> list[bytes]:
        events: list[Event] = []  # newest first
        oldest = before
        for _entry_id, fields in entries:
            event = Event.from_line(fields[1])
            if event.epoch != room.epoch:
                break
            oldest = event.seq
            events.append(event)
        events.reverse()
        lines = [e.line for e in events if roles is None or e.visible_to(roles)]
        if len(entries) < limit and oldest > 1 and len(lines) < limit:
            # The stream ends here: the archiver has written everything older.
            older = self._store.events_before(
                room.name, room.epoch, oldest, limit - len(lines), roles
            )
            lines = older + lines
        return _revised(lines, events + room.events())


def _revised(lines: list[bytes], later: list[Event]) -> list[bytes]:
    """The lines with the edits and deletions among `later` applied."""
    revisions = [revision[0] for event in later if (revision := revision_of(event)) is not None]
    if not revisions:
        return lines
    revised = []
    for line in lines:
        for revise in revisions:
            line = revise(line)
        revised.append(line)
    return revised
