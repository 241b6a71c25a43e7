"""Erasure: every message of a user, in every room, loses its text (and so do their edits),
and the user's read markers are dropped (chatd/read_markers.py).

`chatd-transcript erase --user ID` is safe while the daemon runs, because it never writes a
file the daemon may be writing: the daemon holds an exclusive lock on `.chatd.lock` in the
transcript directory for as long as it runs. If the tool gets that lock, no daemon is running
and it rewrites the files itself, holding the lock (a daemon starting meanwhile refuses to
start until it is done). If it cannot, it asks the running daemon: it drops a request file
(`.erase-TOKEN.request`) in the directory and waits for the daemon's report beside it
(`.erase-TOKEN.done`). The daemon looks at the directory's modification time every
`POLL_INTERVAL` seconds (one stat), lists it only when that changed, and erases through its
transcript editor, one room at a time in that room's turn with edits, deletions and
retention, and in its rooms' memory too.

The server API can call `Erasure.erase(user)` (a Deferred of the same report).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from chatd import rewrite
from chatd.config import ConfigError, load_daemon_config
from chatd.events import Event
from chatd.names import USER_ID
from chatd.read_markers import JOURNAL, without_user
from chatd.redaction import TranscriptEditor, erase_user
from chatd.transcript import room_names, segment_paths

LOCK_FILE = ".chatd.lock"
REQUEST_PREFIX = ".erase-"
POLL_INTERVAL = 1.0


class DirectoryBusy(Exception):
    """Another process holds the transcript directory's lock."""


def lock_directory(directory: Path, shared: bool = False) -> int:
    """Take the directory's lock (the daemon holds it while it runs); the descriptor to keep
    open. Raises DirectoryBusy if someone else has it. `shared`: the nodes of a cluster
    (Redis mode) share the directory with each other, never with an erasure."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DirectoryBusy(f"{directory} is in use by a running chatd") from None
    return fd


def new_report(user: str) -> dict:
    return {"user": user, "rooms": {}, "events": 0, "read_markers": 0}


def _record(report: dict, room: str, files: list[str], changed: int) -> None:
    if changed:
        report["rooms"][room] = {"events": changed, "files": files}
        report["events"] += changed


def erase_files(directory: Path, user: str) -> dict:
    """Erase `user` from every transcript file; only with the directory's lock held."""
    report = new_report(user)
    revise = erase_user(user)
    for room in room_names(directory):
        files, changed = [], 0
        for path in segment_paths(directory, room):
            done = rewrite.rewrite(path, revise)
            if done is not None:
                files.append(path.name)
                changed += done.changed
        _record(report, room, files, changed)
    dropped = rewrite.rewrite(directory / JOURNAL, without_user(user))
    report["read_markers"] = dropped.dropped if dropped is not None else 0
    return report


class Erasure:
    """The daemon's side: erasing through the transcript editor, and serving the tool."""

    _log = Logger()

    def __init__(self, editor: TranscriptEditor, may_rewrite: Callable[[], bool] = lambda: True):
        self.editor = editor
        # Redis mode: only the node archiving now serves the tool's requests (its `editor`
        # is the archiver's: the one process that writes transcripts).
        self.may_rewrite = may_rewrite
        self._server = None
        self._call = None
        self._busy = False
        self._seen_mtime = None  # of the directory, when it was last listed

    def attach(self, server) -> None:
        self._server = server
        server.on_start.append(self.start)

    def start(self) -> None:
        self._call = self._server.clock.callLater(POLL_INTERVAL, self._poll)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()

    @inlineCallbacks
    def erase(self, user: str):
        """Erase `user` in every room; fires with the report."""
        store = self.editor.store
        revise = erase_user(user)
        report = new_report(user)
        for room in store.rooms():
            outcome = yield self.editor.rewrite(
                room, lambda room=room: segment_paths(store.directory, room), revise
            )
            loaded = self._server.directory.rooms.get(room)
            if loaded is not None:
                for event in loaded.events():
                    line = revise(event.line)
                    if line is not event.line:
                        loaded.revise(Event.from_line(line))
            _record(report, room, outcome.files, outcome.changed)
        report["read_markers"] = self._server.read_markers.erase(user)
        self._log.info(
            "erased {user}: {events} event(s) in {rooms} room(s), {markers} read marker(s)",
            user=user,
            events=report["events"],
            rooms=len(report["rooms"]),
            markers=report["read_markers"],
        )
        return report

    def _poll(self) -> None:
        self._call = self._server.clock.callLater(POLL_INTERVAL, self._poll)
        if self._busy or not self.may_rewrite():
            return
        directory = self.editor.store.directory
        try:
            mtime = os.stat(directory).st_mtime_ns
            if mtime == self._seen_mtime:
                return
            self._seen_mtime = mtime
            pending = sorted(directory.glob(f"{REQUEST_PREFIX}*.request"))
        except OSError:
            return
        if pending:
            self._seen_mtime = None  # look again next time: more may be waiting
            self._busy = True
            self._serve(pending[0]).addBoth(self._served)

    def _served(self, _result) -> None:
        self._busy = False

    @inlineCallbacks
    def _serve(self, request: Path):
        done = request.with_suffix(".done")
        try:
            user = json.loads(request.read_text(encoding="utf-8"))["user"]
            if not isinstance(user, str) or not USER_ID.fullmatch(user):
                raise ValueError(f"not a user id: {user!r}")
            report = yield self.erase(user)
        except Exception as error:
            self._log.failure("erasure request {request} failed", request=request.name)
            report = {"error": str(error)}
        rewrite.write_atomically(done, json.dumps(report).encode())
        request.unlink(missing_ok=True)


# -- the command line -----------------------------------------------------------------------------


def ask_daemon(directory: Path, user: str, timeout: float) -> dict:
    token = secrets.token_hex(8)
    request = directory / f"{REQUEST_PREFIX}{token}.request"
    rewrite.write_atomically(request, json.dumps({"user": user}).encode())
    done = request.with_suffix(".done")
    deadline = time.monotonic() + timeout
    while not done.exists():
        if time.monotonic() > deadline:
            request.unlink(missing_ok=True)
            raise RuntimeError(f"the daemon did not answer within {timeout:g}s")
        time.sleep(0.1)
    report = json.loads(done.read_text(encoding="utf-8"))
    done.unlink(missing_ok=True)
    if "error" in report:
        raise RuntimeError(f"the daemon could not erase: {report['error']}")
    return report


def erase(directory: Path, user: str, timeout: float) -> tuple[dict, str]:
    """(report, who did it: "daemon" or "this tool")."""
    try:
        fd = lock_directory(directory)
    except DirectoryBusy:
        return ask_daemon(directory, user, timeout), "the running daemon"
    try:
        return erase_files(directory, user), "chatd-transcript (no daemon was running)"
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="chatd-transcript erase",
        description="Remove the text of every message (and edit) of a user from every room's"
        ' transcript, keeping each event\'s seq, type and sender, marked "redacted".'
        " Safe while the daemon runs: it then does the work itself.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", "-c", type=Path, metavar="FILE", help="the daemon's INI file")
    where.add_argument("--dir", "-d", type=Path, metavar="DIR", help="the transcript directory")
    parser.add_argument("--user", "-u", required=True, help="the user id (as in 'from')")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    parser.add_argument("--json", "-j", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    if not USER_ID.fullmatch(args.user):
        parser.error(f"not a user id: {args.user!r}")
    try:
        directory = args.dir or load_daemon_config(args.config).transcripts.directory
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    if not directory.is_dir():
        print(f"chatd-transcript: {directory}: no such directory", file=sys.stderr)
        return 1
    try:
        report, by = erase(directory, args.user, args.timeout)
    except (RuntimeError, OSError) as error:
        print(f"chatd-transcript erase: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"erased {args.user}: {report['events']} event(s) redacted, by {by}")
    for room, what in sorted(report["rooms"].items()):
        print(f"  {room}: {what['events']} event(s) in {', '.join(what['files'])}")
    print(f"and {report['read_markers']} read marker(s) dropped")
    return 0
