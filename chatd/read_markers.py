"""Read markers: how far each user has read each room, kept durably and told to the room.

Attached to the server from outside, as moderation is: a request handler (`read`), a field of
`joined` (the markers of the room's members), a start hook (the journal is loaded) and a
shutdown hook (what is pending is written).

A marker is per user per room, shared by the user's sessions, and counts in the room's
history (`epoch`): the seq of the last event the user has read. It never moves back: a lower
seq leaves it as it is, and one past the room's latest event counts as the latest. A marker of
an earlier epoch (the room's history was started afresh) counts as nothing.

Markers are kept in a journal beside the transcripts, `read-markers.journal` (one JSON object
a line: room, user, epoch, seq, ts). Its name has no `.jsonl` ending, so that no room can be
named like it (room names cannot hold a '.', and transcripts are `ROOM.jsonl`). The changes of
a reactor turn are written at its end in one write (and fsynced with `[transcripts] fsync =
batch`), as the transcripts' group commit does; only then are they in force and told to the
room's sessions (the reader's own included, which is how it learns that the marker is
stored). A write that fails is cut back, logged once per cause, and each reader whose marker
it held is told `unavailable`. At start the journal is read whole, the last line for each
(room, user) winning; a torn last line (a crash mid-write: never told to anyone) is cut off
with a warning. When the journal holds more than twice as many lines as there are markers
(and at least `compact_lines`), it is rewritten with one line per marker, atomically
(chatd/rewrite.py).

In Redis mode (`shared`, chatd/redis/reads.py) the markers are stored in Redis instead of the
journal, and a node knows those of the rooms it holds: from the room's snapshot when it takes
the room on (`adopt`), then from the `read` frames told to the room by any node (`heard`).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from chatd import errors, rewrite, wire
from chatd.events import format_ts, parse_ts
from chatd.pipeline import failure_cause
from chatd.rooms import Room

JOURNAL = "read-markers.journal"
COMPACT_LINES = 10_000
UNSTORED = "the read marker could not be stored; retry later"


@dataclass(frozen=True, slots=True)
class Marker:
    epoch: str
    seq: int
    ts: float


@dataclass(slots=True)
class Pending:
    """A marker on its way to the journal, and the readers to tell if it cannot be stored."""

    marker: Marker
    readers: list[tuple[Any, str | None]] = field(default_factory=list)  # (session, ref)


def journal_line(room: str, user: str, marker: Marker) -> bytes:
    record = {"room": room, "user": user, "epoch": marker.epoch, "seq": marker.seq}
    return wire.encode({**record, "ts": format_ts(marker.ts)}) + b"\n"


def parse_line(line: bytes) -> tuple[str, str, Marker]:
    """(room, user, marker) of a journal line; raises ValueError if it is not one."""
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    room, user, epoch, seq = (record.get(key) for key in ("room", "user", "epoch", "seq"))
    if not all(isinstance(value, str) for value in (room, user, epoch)):
        raise ValueError("room, user or epoch is not a string")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError("seq is not a whole number")
    return room, user, Marker(epoch, seq, parse_ts(record.get("ts", "")))


def without_user(user: str) -> rewrite.Revise:
    """A revision of the journal that drops `user`'s lines (erasure, with no daemon running)."""

    def revise(line: bytes) -> bytes | None:
        try:
            return None if parse_line(line)[1] == user else line
        except ValueError:
            return line

    return revise


class ReadMarkers:
    _log = Logger()

    def __init__(self, directory: Path, fsync: bool, compact_lines: int = COMPACT_LINES):
        self.path = directory / JOURNAL
        self.compact_lines = compact_lines
        self._fsync = fsync
        self._markers: dict[str, dict[str, Marker]] = {}  # room -> user -> marker
        self._count = 0  # markers held
        self._lines = 0  # lines in the journal
        self._pending: dict[tuple[str, str], Pending] = {}  # by (room, user)
        self._turn_call = None
        self._fd: int | None = None
        self.failing: str | None = None  # the cause of the last failed write, until a success
        self._server = None
        self.shared = None  # Redis mode: where markers are stored (chatd/redis/reads.py)

    def attach(self, server) -> None:
        self._server = server
        server.handlers["read"] = self.read
        server.joined_fields.append(self.joined_fields)
        server.on_start.append(self.load)
        server.on_shutdown.append(self.shutdown)

    # -- what the server and the desk ask ----------------------------------------------------

    def of(self, room: str, user: str, epoch: str) -> int:
        """The seq up to which `user` has read `room`'s history `epoch` (0: nothing yet)."""
        marker = self._markers.get(room, {}).get(user)
        return marker.seq if marker is not None and marker.epoch == epoch else 0

    def joined_fields(self, session, room: Room) -> dict:
        """`read`: the markers of the room's members (the joiner's own included; in Redis
        mode those on other nodes too)."""
        markers = self._markers.get(room.name, {})
        read = {}
        for user in room.names() if room.others else room.members:
            marker = markers.get(user)
            if marker is not None and marker.epoch == room.epoch:
                read[user] = marker.seq
        return {"read": read}

    # -- requests -----------------------------------------------------------------------------

    def read(self, session, request: wire.Read) -> bytes | None:
        """Move the user's marker forward; the room hears of it once it is stored. A marker
        that would not move is answered at once, to this session only, with the marker as it
        is."""
        server = self._server
        room = server.joined_room(session, request.room)
        seq = min(request.seq, room.committed_seq)
        key = (room.name, session.user)
        pending = self._pending.get(key)
        if pending is not None and pending.marker.epoch == room.epoch:
            if seq > pending.marker.seq:
                pending.marker = Marker(room.epoch, seq, server.now())
            pending.readers.append((session, request.ref))
            return None
        current = self.of(room.name, session.user, room.epoch)
        if seq <= current:
            return wire.read_marker(room.name, session.user, current)
        pending = self._pending[key] = Pending(Marker(room.epoch, seq, server.now()))
        pending.readers.append((session, request.ref))
        if self._turn_call is None:
            self._turn_call = server.clock.callLater(0, self._end_of_turn)
        return None

    # -- the group commit ---------------------------------------------------------------------

    def _end_of_turn(self) -> None:
        self._turn_call = None
        batch, self._pending = self._pending, {}
        if not batch:
            return
        if self.shared is not None:
            entries = [
                (room, user, p.marker.epoch, p.marker.seq, p.marker.ts)
                for (room, user), p in batch.items()
            ]
            stored = self.shared.store(entries)
            stored.addCallbacks(lambda _: self._stored(batch), self._unstored, errbackArgs=(batch,))
            return
        data = b"".join(journal_line(room, user, p.marker) for (room, user), p in batch.items())
        try:
            self._append(data)
        except OSError as error:
            self._failed(error, batch)
            return
        self._lines += len(batch)
        self._stored(batch)
        if self._lines > max(self.compact_lines, 2 * self._count):
            self._compact()

    def _unstored(self, failure, batch: dict[tuple[str, str], Pending]) -> None:
        self._failed(failure.value, batch)

    def _stored(self, batch: dict[tuple[str, str], Pending]) -> None:
        """The batch is durable: in force here, and told to the rooms."""
        if self.failing is not None:
            self._log.info("read markers are stored again ({cause})", cause=self.failing)
            self.failing = None
        told: dict[tuple[str, str], list[bytes]] = {}  # by (room, epoch)
        for (room, user), pending in batch.items():
            marker = pending.marker
            self._set(room, user, marker)
            told.setdefault((room, marker.epoch), []).append(
                wire.read_marker(room, user, marker.seq)
            )
        for (name, epoch), lines in told.items():
            self._tell(name, epoch, lines)

    def _set(self, room: str, user: str, marker: Marker) -> None:
        markers = self._markers.setdefault(room, {})
        self._count += user not in markers
        markers[user] = marker

    # -- Redis mode: markers from the other nodes ----------------------------------------------

    def adopt(self, room: str, markers: dict[str, Marker]) -> None:
        """A room taken on from Redis: its markers as Redis has them."""
        self._count -= len(self._markers.pop(room, {}))
        for user, marker in markers.items():
            self._set(room, user, marker)

    def heard(self, room: Room, lines: list[bytes]) -> None:
        """Frames another node told the room: its `read` frames move markers here too."""
        now = self._server.now()
        for line in lines:
            if not line.startswith(b'{"type":"read"'):
                continue
            frame = json.loads(line)
            if frame.get("seq", 0) > self.of(room.name, frame["user"], room.epoch):
                self._set(room.name, frame["user"], Marker(room.epoch, frame["seq"], now))

    def _tell(self, name: str, epoch: str, lines: list[bytes]) -> None:
        """The room's sessions get its new markers of this turn in one write."""
        room = self._server.directory.rooms.get(name)
        if room is None or room.epoch != epoch:
            return
        self._server.pipeline.tell_room(room, lines)

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o640)
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if self._fsync:
                os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)  # no torn line left behind to glue the next to
            raise

    def _failed(self, error: Exception, batch: dict[tuple[str, str], Pending]) -> None:
        cause = failure_cause(error) if isinstance(error, OSError) else str(error)
        if cause != self.failing:
            self.failing = cause
            self._log.critical(
                "cannot write the read markers {place}: {error}; the readers are told to"
                " retry (logged once until writes succeed again or the cause changes)",
                place="to Redis" if self.shared is not None else f"journal {self.path}",
                error=str(error),
            )
        metrics = self._server.metrics
        for pending in batch.values():
            for session, ref in pending.readers:
                if session.connection is not None:
                    metrics.errors.labels(errors.UNAVAILABLE).inc()
                    session.connection.send(wire.error(errors.UNAVAILABLE, UNSTORED, ref))

    # -- the journal ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read the journal: the last line of each (room, user) wins (not in Redis mode)."""
        if self.shared is not None:
            return
        try:
            handle = open(self.path, "r+b")  # noqa: SIM115
        except FileNotFoundError:
            return
        with handle:
            data = handle.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                handle.truncate(end)
                self._log.warn(
                    "{path}: cut a torn last line of {size} bytes (the daemon stopped"
                    " mid-write; no one was told of that marker): {torn!r}",
                    path=str(self.path),
                    size=len(data) - end,
                    torn=data[end : end + 120],
                )
        for number, line in enumerate(data[:end].split(b"\n")[:-1], 1):
            try:
                room, user, marker = parse_line(line)
            except ValueError as error:
                self._log.warn(
                    "{path}: skipped unreadable line {number}: {error}",
                    path=str(self.path),
                    number=number,
                    error=str(error),
                )
                continue
            self._set(room, user, marker)
            self._lines += 1
        self._log.info(
            "read markers: {count} loaded from {path}", count=self._count, path=str(self.path)
        )

    def _compact(self) -> None:
        """Rewrite the journal with one line per marker (aside, fsynced, renamed)."""
        data = b"".join(
            journal_line(room, user, marker)
            for room, markers in self._markers.items()
            for user, marker in markers.items()
        )
        self._close()
        try:
            rewrite.write_atomically(self.path, data)
        except OSError as error:
            self._log.error(
                "could not compact the read markers journal {path}: {error}; it keeps growing",
                path=str(self.path),
                error=str(error),
            )
            return
        self._log.info(
            "compacted the read markers journal from {before} lines to {after}",
            before=self._lines,
            after=self._count,
        )
        self._lines = self._count

    def erase(self, user: str) -> int:
        """Forget `user`'s markers in every room (erasure), journal included; how many."""
        erased = 0
        for markers in self._markers.values():
            erased += markers.pop(user, None) is not None
        for key in [key for key in self._pending if key[1] == user]:
            del self._pending[key]
        self._count -= erased
        if erased and self.shared is None:
            self._compact()
        return erased

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def shutdown(self) -> None:
        """Write what is pending and close the journal."""
        if self._turn_call is not None and self._turn_call.active():
            self._turn_call.cancel()
        self._end_of_turn()
        self._close()
