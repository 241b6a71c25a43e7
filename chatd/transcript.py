"""Room transcripts: one JSONL file per room, appended in batches and read back from the end.

A transcript line is exactly the JSON of the event as clients receive it, so `tail -F | jq`
sees what the room saw. Writes go straight to an O_APPEND file descriptor, one `write` per
batch, so a line is never split across two system calls of ours; a crash (or a full disk) can
still leave a torn last line, which recovery cuts off with a warning: it was never acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from twisted.logger import Logger

from chatd.events import Event
from chatd.names import ROOM_NAME

_BLOCK = 64 * 1024
SUFFIX = ".jsonl"
# A rotated transcript: ROOM.<UTC time of its first event>[-N].jsonl, e.g.
# lobby.2026-11-24T211826Z.jsonl. Room names have no '.', so no room is named like one.
ROTATED = re.compile(
    rf"(?P<room>{ROOM_NAME.pattern})\.(?P<stamp>\d{{4}}-\d{{2}}-\d{{2}}T\d{{6}}Z)(?:-(?P<n>\d+))?\.jsonl"
)


def segment_paths(directory: Path, room: str) -> list[Path]:
    """A room's transcript files, oldest first: the rotated ones, then the current ROOM.jsonl.

    Only files that exist are listed. Rotated files sort by the time in their name, then by
    their collision counter.
    """
    paths = rotated_paths(directory, room)
    current = directory / f"{room}{SUFFIX}"
    if current.exists():
        paths.append(current)
    return paths


def rotated_paths(directory: Path, room: str) -> list[Path]:
    """A room's rotated transcript files, oldest first. This lists the whole directory, so
    readers call it only when the current file does not hold what they need."""
    rotated = []
    for entry in os.scandir(directory):
        match = ROTATED.fullmatch(entry.name)
        if match and match["room"] == room:
            rotated.append((match["stamp"], int(match["n"] or 0), Path(entry.path)))
    return [path for _stamp, _n, path in sorted(rotated)]


def newest_first(directory: Path, room: str, rotated: list[Path] | None = None) -> Iterator[Path]:
    """The current file, then (listed only if the caller reads on, unless `rotated` lists
    them already) the rotated ones, newest first. A room without a current file has no
    history: rotation always starts a new one."""
    current = directory / f"{room}{SUFFIX}"
    if not current.exists():
        return
    yield current
    yield from reversed(rotated_paths(directory, room) if rotated is None else rotated)


def rotated_index(directory: Path) -> dict[str, list[Path]]:
    """Every room's rotated files, oldest first, from one listing of the directory: for a
    reader of many rooms, which would otherwise list the directory once per room."""
    found: dict[str, list[tuple[str, int, Path]]] = {}
    for entry in os.scandir(directory):
        match = ROTATED.fullmatch(entry.name)
        if match:
            found.setdefault(match["room"], []).append(
                (match["stamp"], int(match["n"] or 0), Path(entry.path))
            )
    return {room: [path for _s, _n, path in sorted(files)] for room, files in found.items()}


def room_names(directory: Path) -> list[str]:
    """Every room with a current or a rotated transcript in `directory`."""
    names = set()
    for entry in os.scandir(directory):
        rotated = ROTATED.fullmatch(entry.name)
        if rotated:
            names.add(rotated["room"])
        elif entry.name.endswith(SUFFIX) and ROOM_NAME.fullmatch(entry.name[: -len(SUFFIX)]):
            names.add(entry.name[: -len(SUFFIX)])
    return sorted(names)


def rotated_path(current: Path, first_ts: float) -> Path:
    """Where `current` goes when it is rotated: named by the UTC time of its first event."""
    room = current.name[: -len(SUFFIX)]
    stamp = datetime.fromtimestamp(first_ts, UTC).strftime("%Y-%m-%dT%H%M%SZ")
    candidate = current.with_name(f"{room}.{stamp}{SUFFIX}")
    counter = 0
    while candidate.exists():
        counter += 1
        candidate = current.with_name(f"{room}.{stamp}-{counter}{SUFFIX}")
    return candidate


def new_epoch() -> str:
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Rotation:
    """When a room's current transcript is renamed aside and a new one started.

    Checked before each batch is written, so a batch never straddles two files.
    """

    daily: bool = False
    max_bytes: int = 0  # 0: no size limit

    def due(self, first_ts: float | None, size: int, batch_ts: float, batch_bytes: int) -> bool:
        if first_ts is None or size == 0:
            return False
        if self.daily and _utc_date(first_ts) != _utc_date(batch_ts):
            return True
        return bool(self.max_bytes) and size + batch_bytes > self.max_bytes


def _utc_date(ts: float):
    return datetime.fromtimestamp(ts, UTC).date()


class TranscriptWriter:
    """Appends one room's lines; nothing reaches the file until `flush`.

    The file is opened at the first flush and may be closed between flushes (`close`): an idle
    room holds no file descriptor, and the next flush opens the file again.
    """

    _log = Logger()

    def __init__(self, path: Path, rotation: Rotation = Rotation()):
        self.path = path
        self._rotation = rotation
        self._pending: list[bytes] = []
        self._batch_ts = 0.0
        self._fd: int | None = None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._size = os.fstat(self._fd).st_size
        self._first_ts = _first_ts(self.path) if self._size else None

    def append(self, line: bytes, ts: float) -> None:
        if not self._pending:
            self._batch_ts = ts
        self._pending.append(line)

    def flush(self, fsync: bool) -> None:
        """Write every pending line; on failure cut the file back so no torn line remains."""
        if not self._pending:
            return
        data = b"\n".join(self._pending) + b"\n"
        self._pending.clear()
        if self._fd is None:
            self._open()
        if self._rotation.due(self._first_ts, self._size, self._batch_ts, len(data)):
            self._rotate()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            if fsync:
                os.fsync(self._fd)
        except OSError:
            # Best effort: if this fails too, recovery cuts the torn line at the next start.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        if self._first_ts is None:
            self._first_ts = self._batch_ts

    def _rotate(self) -> None:
        """Rename the current file aside and start a new one; every line already written is
        in the renamed file, and `tail -F` moves on to the new one by name."""
        target = rotated_path(self.path, self._first_ts)
        os.rename(self.path, target)
        os.close(self._fd)
        self._open()
        self._log.info("rotated {path} to {target}", path=str(self.path), target=target.name)

    def close(self) -> None:
        """Close the file (pending lines stay pending); the next flush opens it again."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _first_ts(path: Path) -> float | None:
    with open(path, "rb") as handle:
        try:
            return Event.from_line(handle.readline().rstrip(b"\n")).ts
        except ValueError:
            return None


@dataclass(frozen=True)
class Recovered:
    """What a transcript says about its room."""

    epoch: str
    last_seq: int
    recent: list[Event]


class TranscriptStore:
    """The transcript directory: the rooms' writers, recovery, paging and reading back."""

    _log = Logger()

    def __init__(self, directory: Path, rotation: Rotation = Rotation()):
        self.directory = directory
        self.rotation = rotation
        self._writers: dict[str, TranscriptWriter] = {}
        # Rooms with lines waiting for the next flush: with many rooms, scanning every writer
        # at every commit cost a third of the daemon's time (measured with py-spy in bench (c)).
        self._dirty: dict[str, TranscriptWriter] = {}
        # Writers flushed since the last `close_idle`: the others' files are closed then.
        self._flushed: set[str] = set()

    def prepare(self) -> None:
        """Create the directory (0750) if needed and check that we can write there."""
        self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(f"{self.directory} is not writable by this user")

    def path_of(self, room: str) -> Path:
        # The room grammar has no '/', '.' or '\0', so the name cannot leave the directory.
        if not ROOM_NAME.fullmatch(room):
            raise ValueError(f"not a room name: {room!r}")
        return self.directory / f"{room}{SUFFIX}"

    def rooms(self) -> list[str]:
        return room_names(self.directory)

    def probe(self) -> str | None:
        """Try to write a byte to a new file in the directory; None if it worked, else why.

        What /healthz asks: a writable-looking directory on a full disk still fails every
        write, and only a real write tells.
        """
        path = self.directory / f".chatd-probe-{os.getpid()}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"\n")
            finally:
                os.close(fd)
                os.unlink(path)
        except OSError as error:
            return error.strerror or str(error)
        return None

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still use on the directory's file system."""
        stats = os.statvfs(self.directory)
        return stats.f_bavail * stats.f_frsize

    def writer(self, room: str) -> TranscriptWriter:
        writer = self._writers.get(room)
        if writer is None:
            writer = self._writers[room] = TranscriptWriter(self.path_of(room), self.rotation)
        return writer

    def append(self, room: str, line: bytes, ts: float) -> None:
        """Queue one line for the room's transcript; `flush` writes it."""
        writer = self._dirty.get(room)
        if writer is None:
            writer = self._dirty[room] = self.writer(room)
        writer.append(line, ts)

    def flush(self, fsync: bool) -> list[tuple[str, OSError]]:
        """Flush every writer with pending lines; returns the rooms whose write failed."""
        failures = []
        dirty, self._dirty = self._dirty, {}
        self._flushed.update(dirty)
        for room, writer in dirty.items():
            try:
                writer.flush(fsync)
            except OSError as error:
                failures.append((room, error))
        return failures

    def close_idle(self) -> int:
        """Close the files of the rooms not written since the last call; returns how many.

        Called on a timer, so that a room that falls quiet holds no file descriptor for long
        (the process's open-file limit would otherwise cap how many rooms it can hold).
        """
        closed = 0
        for room, writer in self._writers.items():
            if writer.is_open and room not in self._flushed and room not in self._dirty:
                writer.close()
                closed += 1
        self._flushed.clear()
        return closed

    @property
    def open_files(self) -> int:
        return sum(writer.is_open for writer in self._writers.values())

    def release(self, room: str) -> None:
        """The room left memory: close and forget its writer (nothing may be pending)."""
        writer = self._writers.pop(room, None)
        if writer is not None:
            writer.close()
        self._flushed.discard(room)

    def reopen(self, room: str) -> None:
        """The room's current file was replaced (an atomic rewrite, chatd/rewrite.py): close
        the old one, so that the next flush appends to the new file (pending lines stay)."""
        writer = self._writers.get(room)
        if writer is not None:
            writer.close()

    def remove(self, room: str) -> list[Path]:
        """Delete the room's transcript files (a room in which nothing was ever said)."""
        self.release(room)
        removed = []
        for path in segment_paths(self.directory, room):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
        return removed

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def read_back(self, room: str, rotated: list[Path] | None = None) -> Iterator[Event]:
        """The room's events, newest first, across rotations; unreadable lines are skipped.

        Rotated files are listed only if the reader goes on past the current file (a reader
        of many rooms passes each room's `rotated` files from one `rotated_index`).
        """
        self.path_of(room)  # validates the name
        for path in newest_first(self.directory, room, rotated):
            with open(path, "rb") as handle:
                end = _end_of_last_line(handle, _size(handle))
                for _offset, line in _lines_backwards(handle, end):
                    try:
                        yield Event.from_line(line)
                    except ValueError:
                        continue

    def recover(self, room: str, keep: int) -> Recovered | None:
        """Epoch, last seq and the latest `keep` events of a room, or None if it has no history.

        Reads back from the end of the newest file into rotated ones as far as needed. A torn
        last line (no newline: the process died mid-write) is cut off with a warning; other
        unreadable lines are skipped with a warning.
        """
        self.path_of(room)  # validates the name
        recent: list[Event] = []
        epoch = None
        last_seq = 0
        # Unreadable lines after the newest readable one: each may have held a delivered event,
        # so their seqs are skipped, never reused.
        unreadable_newest = 0
        for index, path in enumerate(newest_first(self.directory, room)):
            # Only the newest file can end in a torn line: rotation follows a complete write.
            with open(path, "r+b" if index == 0 else "rb") as handle:
                end = self._cut_torn_tail(handle, path) if index == 0 else _size(handle)
                for offset, line in _lines_backwards(handle, end):
                    try:
                        event = Event.from_line(line)
                    except ValueError as error:
                        self._log.warn(
                            "{path}: skipped an unreadable line at byte {offset}: {error}",
                            path=str(path),
                            offset=offset,
                            error=str(error),
                        )
                        if epoch is None:
                            unreadable_newest += 1
                            continue
                        break  # the history in memory must have no hole: it ends here
                    if epoch is None:
                        epoch, last_seq = event.epoch, event.seq + unreadable_newest
                        if unreadable_newest:
                            break
                    if event.epoch != epoch or len(recent) >= keep:
                        break
                    recent.append(event)
                else:
                    if recent and recent[-1].seq == 1:
                        break  # the whole history is read: no need to list rotated files
                    continue
                break
        if epoch is None:
            return None
        recent.reverse()
        return Recovered(epoch=epoch, last_seq=last_seq, recent=recent)

    def _cut_torn_tail(self, handle, path: Path) -> int:
        """Truncate anything after the last newline; returns the new size."""
        end = _size(handle)
        keep = _end_of_last_line(handle, end)
        if keep < end:
            handle.seek(keep)
            torn = handle.read(min(end - keep, 120))
            handle.truncate(keep)
            self._log.warn(
                "{path}: cut a torn last line of {size} bytes at byte {offset}: the daemon"
                " stopped mid-write, and the line was never acknowledged: {torn!r}",
                path=str(path),
                size=end - keep,
                offset=keep,
                torn=torn,
            )
        return keep

    def events_before(
        self, room: str, epoch: str, before: int, limit: int, roles: frozenset[str] | None = None
    ) -> list[bytes]:
        """Up to `limit` lines of `epoch` with seq < `before`, oldest first, across rotations;
        with `roles`, only those a session with these roles may see (`Event.visible_to`)."""
        self.path_of(room)  # validates the name
        found: list[bytes] = []
        for path in newest_first(self.directory, room):
            with open(path, "rb") as handle:
                end = _offset_of_first_seq_at_least(handle, before)
                for _offset, line in _lines_backwards(handle, end):
                    try:
                        event = Event.from_line(line)
                    except ValueError:
                        continue
                    if event.epoch != epoch:
                        break
                    if event.seq < before and (roles is None or event.visible_to(roles)):
                        found.append(line)
                        if len(found) >= limit:
                            break
                    if event.seq == 1:
                        break  # the start of the history
                else:
                    continue
                break
        found.reverse()
        return found

    def events_after(self, room: str, epoch: str | None, seq: int, limit: int) -> list[Event]:
        """Up to `limit` events after (`epoch`, `seq`), oldest first, across rotations.

        A reader's forward cursor (the webhooks'). A room's files hold one epoch: if it is not
        `epoch` (the room was made anew, or there is no cursor yet: None), its history is read
        from the start. Unreadable lines and a torn last line are skipped.
        """
        self.path_of(room)  # validates the name
        current = self.directory / f"{room}{SUFFIX}"
        paths = None
        # Most reads are of the current file only: the directory is listed only when the
        # current file starts after the cursor (or is missing).
        with contextlib.suppress(FileNotFoundError), open(current, "rb") as handle:
            first = _first_event(handle)
            if first is not None and first.epoch == epoch and first.seq <= seq + 1:
                paths = [current]
        if paths is None:
            paths = segment_paths(self.directory, room)
        found: list[Event] = []
        for path in paths:
            with open(path, "rb") as handle:
                end = _end_of_last_line(handle, _size(handle))
                first = _first_event(handle)
                start = 0
                if first is not None and first.epoch == epoch:
                    start = min(_offset_of_first_seq_at_least(handle, seq + 1), end)
                handle.seek(start)
                while handle.tell() < end and len(found) < limit:
                    line = handle.readline().rstrip(b"\n")
                    try:
                        event = Event.from_line(line)
                    except ValueError:
                        continue
                    if event.epoch != epoch or event.seq > seq:
                        found.append(event)
            if len(found) >= limit:
                break
        return found


def _size(handle) -> int:
    return handle.seek(0, os.SEEK_END)


def _first_event(handle) -> Event | None:
    """The first readable event of a file (within its first few lines), or None."""
    handle.seek(0)
    for _ in range(8):
        line = handle.readline()
        if not line.endswith(b"\n"):
            return None
        try:
            return Event.from_line(line.rstrip(b"\n"))
        except ValueError:
            continue
    return None


def _end_of_last_line(handle, end: int) -> int:
    """The offset just after the last newline before `end` (0 if there is none)."""
    position = end
    while position > 0:
        start = max(position - _BLOCK, 0)
        handle.seek(start)
        index = handle.read(position - start).rfind(b"\n")
        if index >= 0:
            return start + index + 1
        position = start
    return 0


def _lines_backwards(handle, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for each non-empty line in [0, end), last first; `end` follows a newline."""
    buffer, base, limit = b"", end, 0  # buffer[:limit] holds the unread bytes [base, base+limit)
    while True:
        newline = buffer.rfind(b"\n", 0, limit - 1) if limit > 1 else -1
        if newline < 0 and base > 0:
            start = max(base - _BLOCK, 0)
            handle.seek(start)
            chunk = handle.read(base - start)
            buffer = chunk + buffer[:limit]
            limit += len(chunk)
            base = start
            continue
        if limit == 0:
            return
        line_start = newline + 1
        line = buffer[line_start : limit - 1]
        if line:
            yield base + line_start, line
        limit = line_start


def _offset_of_first_seq_at_least(handle, before: int) -> int:
    """Binary search (lines are in seq order) for the first line with seq >= `before`.

    An unreadable line counts as "before", which can only move the answer later: callers scan
    backwards from it and filter by seq, so a late answer costs time, never correctness.
    """
    end = handle.seek(0, os.SEEK_END)
    lo, hi = 0, end
    while lo < hi:
        mid = (lo + hi) // 2
        if mid == 0:
            start = 0
        else:
            handle.seek(mid - 1)
            handle.readline()
            start = handle.tell()
        if start >= hi:
            return _scan_forward(handle, lo, hi, before)
        handle.seek(start)
        line = handle.readline()
        try:
            at_least = Event.from_line(line.rstrip(b"\n")).seq >= before
        except ValueError:
            at_least = False
        if at_least:
            hi = start
        else:
            lo = start + len(line)
    return hi


def _scan_forward(handle, lo: int, hi: int, before: int) -> int:
    handle.seek(lo)
    while handle.tell() < hi:
        start = handle.tell()
        try:
            if Event.from_line(handle.readline().rstrip(b"\n")).seq >= before:
                return start
        except ValueError:
            continue
    return hi
