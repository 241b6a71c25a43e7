"""`tail -F` for transcripts: a room's complete lines, across its rotated files, as they arrive.

A room's history is its rotated files, oldest first, then the live `ROOM.jsonl`
(`transcript.segment_paths`). A `RoomTail` reads them in that order and hands out complete
lines only. A line still being written (no newline yet) is not consumed: the next call reads
it again from its start, so it comes out whole once its newline arrives; and if the daemon's
recovery cuts it off as torn, the line that replaces it is read instead.

The daemon rotates by renaming `ROOM.jsonl` to a rotated name, then creating a new
`ROOM.jsonl`, and writes nothing more to the old file once the new one exists. The tail keeps
the file it has open (by descriptor, so the rename does not disturb it) until `ROOM.jsonl` is
another file; then it reads what is left in its file and goes on with the file that follows it
in the listing, found by identity (device and inode), so that no line is lost or read twice,
however many rotations happened in between. A file that shrinks (truncated in place, as
logrotate's copytruncate does) is read again from its start.

Polling, not inotify: portable, and cheap (an fstat and a stat per room per call).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from chatd.transcript import SUFFIX, room_names, segment_paths

Identity = tuple[int, int]  # (st_dev, st_ino): which file, whatever its name now


@dataclass(frozen=True)
class Line:
    """One complete transcript line, without its newline."""

    room: str
    path: Path  # the file's name when the tail opened it
    offset: int
    data: bytes


class RoomTail:
    """One room's transcript lines, in order, each handed out once."""

    def __init__(self, directory: Path, room: str, warn: Callable[[str], None]):
        self.directory = directory
        self.room = room
        self._warn = warn
        self._live = directory / f"{room}{SUFFIX}"
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._identity: Identity | None = None  # of the open file, or of the last one read
        self._queue: deque[tuple[Path, Identity]] = deque()  # listed files after that one
        self._offset = 0  # where the next unread line starts in the open file
        self._unfinished = 0  # bytes after the last newline at the last read

    def lines(self, final: bool = False) -> Iterator[Line]:
        """Complete lines written since the last call (all of them, the first time).

        With `final`, an unfinished last line in the live file is skipped with a warning, as
        when reading once; otherwise it waits for the next call.
        """
        while self._file is not None or self._open_next():
            # Look for a successor before reading: once it exists, the daemon has finished
            # with the open file, so this read gets everything the file will ever hold.
            finished = self._has_successor()
            yield from self._read_complete_lines()
            if not finished:
                if final and self._unfinished:
                    self._warn(
                        f"{self._path.name}: skipped an unfinished last line at byte"
                        f" {self._offset} (being written, or torn by a crash)"
                    )
                return
            if self._unfinished:
                self._warn(f"{self._path.name}: skipped a torn last line at byte {self._offset}")
            self._file.close()
            self._file = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _read_complete_lines(self) -> Iterator[Line]:
        if os.fstat(self._file.fileno()).st_size < self._offset:
            self._warn(f"{self._path.name}: truncated; reading it again from the start")
            self._offset = 0
        self._file.seek(self._offset)
        self._unfinished = 0
        for chunk in iter(self._file.readline, b""):
            if not chunk.endswith(b"\n"):
                self._unfinished = len(chunk)
                return
            offset, self._offset = self._offset, self._offset + len(chunk)
            if len(chunk) > 1:
                yield Line(self.room, self._path, offset, chunk[:-1])

    def _has_successor(self) -> bool:
        """Whether a newer file follows the open one."""
        try:
            return _identity(self._live) != self._identity
        except FileNotFoundError:
            # Mid-rotation (renamed, not yet recreated), or a room left with rotated files only.
            return bool(self._following_segments())

    def _open_next(self) -> bool:
        # Rotated files keep their names: list the directory again only to go on to the live
        # file, which may have been rotated since the last listing.
        if not self._queue or self._queue[0][0] == self._live:
            self._queue = deque(self._following_segments())
        if not self._queue:
            return False
        path, identity = self._queue[0]
        try:
            handle = open(path, "rb")  # noqa: SIM115 (kept open across calls; see close)
        except FileNotFoundError:
            self._queue.clear()  # renamed by a rotation just now, or removed: list again
            return False
        if _identity(handle.fileno()) != identity:
            handle.close()  # `path` is already a newer file: list again on the next call
            self._queue.clear()
            return False
        self._queue.popleft()
        self._file, self._path, self._identity, self._offset = handle, path, identity, 0
        return True

    def _following_segments(self) -> list[tuple[Path, Identity]]:
        """The room's files after the last one opened (all of them before the first)."""
        segments = self._segments()
        identities = [identity for _path, identity in segments]
        if self._identity is None:
            return segments
        if self._identity in identities:
            return segments[identities.index(self._identity) + 1 :]
        # The file last read is gone (removed by hand): the live file is what follows.
        return [segment for segment in segments if segment[0] == self._live]

    def _segments(self) -> list[tuple[Path, Identity]]:
        """The room's files, oldest first, with their identities, as of one moment.

        A rotation while the directory is listed could hide a file: listed as ROOM.jsonl, then
        stat'ed after the new ROOM.jsonl replaced it. Every rotation gives ROOM.jsonl a new
        identity, so a listing taken while that identity stayed the same is complete.
        """
        while True:
            live = _identity_if_any(self._live)
            segments = []
            for path in segment_paths(self.directory, self.room):
                identity = _identity_if_any(path)
                if identity is not None:  # else removed since the listing
                    segments.append((path, identity))
            if _identity_if_any(self._live) == live:
                return segments


class DirectoryTail:
    """Tails for one room, or for every room in the directory including rooms that appear."""

    def __init__(self, directory: Path, room: str | None, warn: Callable[[str], None]):
        self.directory = directory
        self._room = room
        self._warn = warn
        self._tails: dict[str, RoomTail] = {}

    def lines(self, final: bool = False) -> list[Iterator[Line]]:
        """Each room's `RoomTail.lines`, rooms in name order."""
        rooms = room_names(self.directory) if self._room is None else [self._room]
        for room in rooms:
            if room not in self._tails:
                self._tails[room] = RoomTail(self.directory, room, self._warn)
        return [self._tails[room].lines(final) for room in sorted(self._tails)]

    def close(self) -> None:
        for tail in self._tails.values():
            tail.close()


def _identity(file: Path | int) -> Identity:
    status = os.stat(file)
    return status.st_dev, status.st_ino


def _identity_if_any(path: Path) -> Identity | None:
    try:
        return _identity(path)
    except FileNotFoundError:
        return None
