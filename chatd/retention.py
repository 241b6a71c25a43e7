"""Retention: events older than `[retention] max_age` (or `[room:NAME] max_age`) leave the
transcripts, on a timer inside the daemon (at start, then every `[retention] interval`).

Per room, oldest file first: a rotated file whose last event is older than the limit is
deleted whole; a file that holds old and new events is rewritten without the old ones (an
atomic rewrite, in the room's turn with edits and deletions: chatd/redaction.py). The current
file is never deleted and never left empty: when even its newest event is too old, that one
line stays as a stub without its text (`"redacted": true, "expired": true`), because the room's
epoch and last seq are read from it: clients that resume keep their place, and the next event
gets the next seq. Rooms in memory forget the old events too.

What clients see afterwards (docs/protocol.md): `history` pages end where the kept events
begin; a resume from before that is answered with `recovered: false` and the latest events; a
resume from a seq the room still holds is recovered as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from twisted.internet.defer import DeferredList, succeed
from twisted.logger import Logger

from chatd.config import RetentionConfig, RoomsConfig
from chatd.events import Event
from chatd.redaction import Outcome, TranscriptEditor, redacted_record
from chatd.transcript import SUFFIX, rotated_paths
from chatd.wire import encode


def expired_before(cutoff: float):
    """A revision that drops every event older than `cutoff` (unreadable lines stay)."""

    def revise(line: bytes) -> bytes | None:
        try:
            return None if Event.from_line(line).ts < cutoff else line
        except ValueError:
            return line

    return revise


def stub(line: bytes) -> bytes:
    """The room's newest line, kept for its epoch and seq, without its text."""
    try:
        record = Event.from_line(line).record
    except ValueError:
        return line
    return encode(redacted_record(record, expired=True))


def last_event(path: Path) -> Event | None:
    """The last readable event of a file (read from its end)."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        block = min(end, 64 * 1024)
        handle.seek(end - block)
        lines = handle.read(block).split(b"\n")
    for line in reversed(lines[1:] if block < end else lines):
        try:
            return Event.from_line(line)
        except ValueError:
            continue
    return None


def old_files(directory: Path, room: str, cutoff: float) -> tuple[list[Path], list[Path]]:
    """(rotated files to delete whole, files to rewrite), oldest first."""
    remove, revise = [], []
    for path in rotated_paths(directory, room):
        last = last_event(path)
        if last is not None and last.ts < cutoff:
            remove.append(path)
        else:
            revise.append(path)
            break
    current = directory / f"{room}{SUFFIX}"
    if current.exists() and not revise:
        revise.append(current)
    return remove, revise


class Retention:
    _log = Logger()

    def __init__(
        self,
        config: RetentionConfig,
        rooms: RoomsConfig,
        editor: TranscriptEditor,
        may_rewrite: Callable[[], bool] = lambda: True,
    ):
        self.config = config
        self.rooms = rooms
        self.editor = editor
        # Redis mode: only the node archiving now writes transcripts (its `editor` is the
        # archiver's); the other nodes forget old events in memory only.
        self.may_rewrite = may_rewrite
        self._server = None
        self._call = None

    def attach(self, server) -> None:
        self._server = server
        if self.config.max_age or any(p.max_age for p in self.rooms.declared.values()):
            server.on_start.append(self.start)

    def max_age(self, room: str) -> float:
        return self.rooms.policy(room).max_age or self.config.max_age

    def start(self) -> None:
        self._call = self._server.clock.callLater(0, self._tick)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()

    def _tick(self):
        self._call = self._server.clock.callLater(self.config.interval, self._tick)
        return self.run()

    def run(self):
        """One pass over every room; fires with {room: Outcome} for the rooms it changed."""
        server = self._server
        now = server.now()
        if not self.may_rewrite():
            for room in server.directory.rooms.values():
                max_age = self.max_age(room.name)
                if max_age:
                    room.forget_before(now - max_age)
            return succeed({})
        passes = {}
        for room in server.store.rooms():
            max_age = self.max_age(room)
            if max_age:
                passes[room] = self.editor.in_turn(
                    room, lambda room=room, cutoff=now - max_age: self._room(room, cutoff)
                )

        def report(results):
            changed = {}
            for (ok, outcome), room in zip(results, passes, strict=True):
                if not ok:
                    self._log.failure("retention pass over {room} failed", outcome, room=room)
                elif outcome.removed or outcome.dropped or outcome.changed:
                    changed[room] = outcome
            if changed:
                self._log.info(
                    "retention removed {events} event(s) and {files} whole file(s) from"
                    " {rooms} room(s) ({stubs} kept as a stub for its room's seq)",
                    events=sum(o.dropped + o.changed for o in changed.values()),
                    stubs=sum(o.changed for o in changed.values()),
                    files=sum(len(o.removed) for o in changed.values()),
                    rooms=len(changed),
                )
            return changed

        return DeferredList(list(passes.values()), consumeErrors=True).addCallback(report)

    def _room(self, room: str, cutoff: float):
        """In the room's turn: delete and rewrite its old files, and forget in memory."""
        directory = self.editor.store.directory
        removed: list[Path] = []

        def remove_whole_files():
            old, rest = old_files(directory, room, cutoff)
            for path in old:
                path.unlink(missing_ok=True)
                removed.append(path)
            return rest

        revise = expired_before(cutoff)
        done = self.editor.offload(remove_whole_files)

        def rewrite_rest(rest):
            # Already in the room's turn: rewrite directly, not through `rewrite` (which
            # would wait for this very turn).
            return self.editor.rewrite_now(room, lambda: rest, revise, stub)

        def forget(outcome: Outcome):
            outcome.removed = [path.name for path in removed]
            loaded = self._server.directory.rooms.get(room)
            if loaded is not None:
                loaded.forget_before(cutoff)
            return outcome

        return done.addCallback(rewrite_rest).addCallback(forget)
