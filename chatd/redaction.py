"""Changing what a room's transcript says: one room at a time, off the reactor thread.

`TranscriptEditor` runs rewrites of a room's files (chatd/rewrite.py) in the daemon: one at a
time per room (a delete, an edit, a retention pass and an erasure of the same room never
interleave), the reading and writing aside in a thread, the rename on the reactor thread,
where it cannot fall between two appends of the room's writer, which is then told to reopen.

The revisions themselves are functions of a transcript line (`redact`, `edit`): they parse
only lines that mention the seq they are after, and return every other line unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, inlineCallbacks, maybeDeferred
from twisted.logger import Logger

from chatd import rewrite
from chatd.events import Event, format_ts
from chatd.transcript import SUFFIX, TranscriptStore, newest_first
from chatd.wire import encode

# Attempts at a rewrite that a rotation keeps getting in the way of.
ATTEMPTS = 5
# The events whose text can be edited and deleted: messages, and the agents' internal notes.
TEXT_KINDS = frozenset({"message", "note"})

Offload = Callable[..., Deferred]


def at_once(function, *args) -> Deferred:
    """Run blocking work right here (unit tests, and tools with no reactor)."""
    return maybeDeferred(function, *args)


# -- revisions of one line ----------------------------------------------------------------------


def redacted_record(record: dict[str, Any], **marks) -> dict[str, Any]:
    """The record without its text, marked `redacted` (and with `marks`)."""
    revised = {key: value for key, value in record.items() if key != "text"}
    revised["redacted"] = True
    revised.update(marks)
    return revised


def _mentions(line: bytes, key: bytes, seq: int) -> bool:
    needle = b'"' + key + b'":' + str(seq).encode()
    at = line.find(needle)
    while at >= 0:
        after = line[at + len(needle) : at + len(needle) + 1]
        if after in (b",", b"}"):
            return True
        at = line.find(needle, at + 1)
    return False


def _event(line: bytes) -> Event | None:
    try:
        return Event.from_line(line)
    except ValueError:
        return None


def redact(epoch: str, target: int) -> rewrite.Revise:
    """Message (or note) `target` loses its text (`"redacted": true`), and so do the edits of
    it."""

    def revise(line: bytes) -> bytes:
        if not (_mentions(line, b"seq", target) or _mentions(line, b"target", target)):
            return line
        event = _event(line)
        if event is None or event.epoch != epoch or "text" not in event.record:
            return line
        record = event.record
        if (event.seq == target and event.kind in TEXT_KINDS) or (
            event.kind == "edit" and record.get("target") == target
        ):
            return encode(redacted_record(record))
        return line

    return revise


def edit(epoch: str, target: int, text: str, ts: float) -> rewrite.Revise:
    """Message (or note) `target` says `text` now, `"edited"` at `ts` (unless it was
    deleted)."""

    def revise(line: bytes) -> bytes:
        if not _mentions(line, b"seq", target):
            return line
        event = _event(line)
        if event is None or event.epoch != epoch or event.seq != target:
            return line
        record = event.record
        if event.kind not in TEXT_KINDS or record.get("redacted"):
            return line
        return encode({**record, "text": text, "edited": format_ts(ts)})

    return revise


def revision_of(event: Event) -> tuple[rewrite.Revise, float] | None:
    """What an `edit` or `delete` event does to the lines before it: its revision, and the
    latest time of an event it revises (the files from its target's to the one holding that
    time are rewritten: the target's edits all came before it). None for other events (their
    lines are not parsed)."""
    if event.kind not in ("edit", "delete"):
        return None
    target = event.record.get("target")
    if not isinstance(target, int):
        return None
    if event.kind == "delete":
        return redact(event.epoch, target), event.ts
    text = event.record.get("text")
    if not isinstance(text, str):
        return None  # an edit of a deleted message, redacted since
    return edit(event.epoch, target, text, event.ts), event.ts


def erase_user(user: str) -> rewrite.Revise:
    """Every message, note and edit of `user` loses its text."""
    quoted = encode({"from": user})[1:-1]  # b'"from":"alice"', as the daemon writes it

    def revise(line: bytes) -> bytes:
        if quoted not in line:
            return line
        event = _event(line)
        if event is None or event.record.get("from") != user:
            return line
        if (event.kind in TEXT_KINDS or event.kind == "edit") and "text" in event.record:
            return encode(redacted_record(event.record))
        return line

    return revise


# -- which files ----------------------------------------------------------------------------------


def first_event(path: Path) -> Event | None:
    try:
        with open(path, "rb") as handle:
            return _event(handle.readline().rstrip(b"\n"))
    except FileNotFoundError:
        return None


def files_from(directory: Path, room: str, seq: int, until_ts: float) -> list[Path]:
    """The file that holds `seq` (in the current epoch), and the newer ones whose first event
    is not later than `until_ts`, oldest first."""
    newer: list[Path] = []
    epoch = None
    for path in newest_first(directory, room):
        first = first_event(path)
        if first is None:
            newer.append(path)
            continue
        epoch = epoch or first.epoch
        if first.epoch != epoch:
            break
        if first.seq <= seq:
            return [path] + [p for p in reversed(newer) if _starts_by(p, until_ts)]
        newer.append(path)
    return []


def _starts_by(path: Path, ts: float) -> bool:
    first = first_event(path)
    return first is None or first.ts <= ts


# -- doing it -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a rewrite of a room's files changed."""

    files: list[str] = field(default_factory=list)
    changed: int = 0
    dropped: int = 0
    removed: list[str] = field(default_factory=list)  # whole files deleted (retention)

    def add(self, prepared: rewrite.Prepared) -> None:
        self.files.append(prepared.path.name)
        self.changed += prepared.changed
        self.dropped += prepared.dropped


class TranscriptEditor:
    """Rewrites of rooms' transcript files, one at a time per room."""

    _log = Logger()

    def __init__(self, store: TranscriptStore, offload: Offload = at_once):
        self.store = store
        self._offload = offload
        self._locks: dict[str, DeferredLock] = {}

    def in_turn(self, room: str, work: Callable[[], Any]) -> Deferred:
        """Run `work` (which may return a Deferred) when the room's earlier rewrites are done."""
        lock = self._locks.get(room)
        if lock is None:
            lock = self._locks[room] = DeferredLock()

        def release(result):
            if not lock.locked and not lock.waiting:
                self._locks.pop(room, None)
            return result

        return lock.run(work).addBoth(release)

    def rewrite(
        self,
        room: str,
        choose: Callable[[], Iterable[Path]],
        revise: rewrite.Revise,
        stub: Callable[[bytes], bytes] | None = None,
    ) -> Deferred:
        """In the room's turn: revise the files `choose` names (called in the thread); fires
        with an `Outcome`."""
        return self.in_turn(room, lambda: self.rewrite_now(room, choose, revise, stub))

    @inlineCallbacks
    def rewrite_now(self, room, choose, revise, stub=None):
        """`rewrite` for a caller that already holds the room's turn (`in_turn`)."""
        current = self.store.directory / f"{room}{SUFFIX}"
        for _attempt in range(ATTEMPTS):
            prepared = yield self._offload(_prepare_all, choose, revise, stub, current)
            outcome = Outcome()
            complete = True
            for one in prepared:
                if rewrite.commit(one, revise):
                    outcome.add(one)
                    if one.path == current:
                        self.store.reopen(room)
                else:
                    complete = False  # rotated meanwhile: choose again
            if complete:
                return outcome
        raise RuntimeError(f"could not rewrite {room}'s transcript: it kept rotating")

    def offload(self, function, *args) -> Deferred:
        return self._offload(function, *args)


def _prepare_all(choose, revise, stub, current: Path) -> list[rewrite.Prepared]:
    prepared = []
    try:
        for path in choose():
            one = rewrite.prepare(path, revise, stub if path == current else None)
            if one is not None:
                prepared.append(one)
    except BaseException:
        for one in prepared:
            rewrite.discard(one)
        raise
    return prepared
