"""`chatd-transcript`: read and follow room transcripts, filtered, as readable lines or JSONL.

Reading is `transcript_tail`'s job; this module chooses the files (from the daemon's
configuration or `--dir`), parses and filters the events, and prints them.
"""

from __future__ import annotations

import argparse
import heapq
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, BinaryIO

from chatd.cli import CONFIG_HELP
from chatd.config import ConfigError, load_daemon_config
from chatd.events import Event
from chatd.names import ROOM_NAME
from chatd.transcript import segment_paths
from chatd.transcript_tail import DirectoryTail, Line

POLL_INTERVAL = 0.2  # seconds between looks at the files when following
PRESENCE_VERBS = {"join": "joined", "leave": "left"}

DESCRIPTION = """\
Print the events of chatd's room transcripts, oldest first: one room (--room)
or all rooms merged by time, across rotated files. An event is printed if it
matches every filter given. Times are UTC; readable output shows HH:MM:SS and a
"-- DATE --" line whenever the date changes.

Lines that are not events are skipped with a note on stderr: a line torn by a
crash, or the line the daemon is writing at that moment (with --follow, that
one is printed once complete).
"""

EPILOG = """\
--follow works like `tail -F`: it prints the matching events already written
(all of them, or the last N with -n N), then new ones as they are written, in
rooms created meanwhile too, and across rotations (ROOM.jsonl renamed, a new
one started). Stop it with Ctrl-C (exit status 130).

examples:
  chatd-transcript -c /etc/chatd/chatd.ini --room lobby --since 2026-11-24
  chatd-transcript --dir var/transcripts -u alice --grep deploy --json | jq .text
  chatd-transcript -f -n 0                  # only new events, in every room
  chatd-transcript -f -n 20 --room lobby    # the last 20, then new ones
  chatd-transcript erase --user alice       # redact every message of alice (see erase -h)
"""


@dataclass(frozen=True)
class TranscriptEvent:
    """A parsed transcript line; `line` is kept to print it unchanged with --json."""

    room: str
    time: datetime
    fields: dict[str, Any]
    line: bytes

    @classmethod
    def parse(cls, line: Line) -> TranscriptEvent:
        """Raises ValueError if the line is not a transcript event."""
        event = Event.from_line(line.data)
        return cls(line.room, datetime.fromtimestamp(event.ts, UTC), event.record, line.data)

    @property
    def user(self) -> str | None:
        user = self.fields.get("from", self.fields.get("user"))
        return user if isinstance(user, str) else None

    @property
    def text(self) -> str | None:
        text = self.fields.get("text")
        return text if isinstance(text, str) else None


@dataclass(frozen=True)
class EventFilter:
    """What --user, --type, --since, --until and --grep ask for; None matches anything."""

    user: str | None = None
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    grep: str | None = None

    def matches(self, event: TranscriptEvent) -> bool:
        # Names are unique without regard to case (the daemon compares them casefolded).
        if self.user is not None and (event.user or "").casefold() != self.user.casefold():
            return False
        if self.type is not None and event.fields["type"] != self.type:
            return False
        if self.since is not None and event.time < self.since:
            return False
        if self.until is not None and event.time >= self.until:
            return False
        return self.grep is None or self.grep.casefold() in (event.text or "").casefold()


class ReadablePrinter:
    """`12:04:31 #lobby <alice> hi`, with a `-- 2026-11-24 --` line when the date changes."""

    def __init__(self, out: BinaryIO):
        self._out = out
        self._day: date | None = None

    def print(self, event: TranscriptEvent) -> None:
        if event.time.date() != self._day:
            self._day = event.time.date()
            self._write(f"-- {self._day.isoformat()} --")
        self._write(f"{event.time:%H:%M:%S} #{event.room} {describe(event)}")

    def flush(self) -> None:
        self._out.flush()

    def _write(self, text: str) -> None:
        self._out.write(text.encode() + b"\n")


class JSONPrinter:
    """The transcript lines themselves, byte for byte: JSONL for `jq`."""

    def __init__(self, out: BinaryIO):
        self._out = out

    def print(self, event: TranscriptEvent) -> None:
        self._out.write(event.line + b"\n")

    def flush(self) -> None:
        self._out.flush()


def describe(event: TranscriptEvent) -> str:
    """The part of a readable line after the time and room."""
    kind = event.fields["type"]
    if kind in ("message", "note"):
        # An agents' internal note is marked as such; continuation lines of a multi-line text
        # are indented under the first.
        mark = "[note] " if kind == "note" else ""
        return f"{mark}<{event.user}> {event.text}".replace("\n", "\n         ")
    if kind == "presence":
        action = event.fields.get("event")
        return f"* {event.user} {PRESENCE_VERBS.get(action, action)}"
    return f"[{kind}] {event.line.decode(errors='replace')}"


def utc_time(text: str) -> datetime:
    """An ISO date or time; one without an offset is UTC, a date alone is its midnight."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_events(lines: Iterable[Line], warn: Callable[[str], None]) -> Iterator[TranscriptEvent]:
    for line in lines:
        try:
            yield TranscriptEvent.parse(line)
        except ValueError as error:
            warn(f"{line.path.name}: skipped an unreadable line at byte {line.offset}: {error}")


@dataclass(frozen=True)
class TranscriptReader:
    """Prints the matching events of the tails' rooms, every room merged by time."""

    tails: DirectoryTail
    selected: EventFilter
    printer: ReadablePrinter | JSONPrinter
    warn: Callable[[str], None]

    def print_new(self, last: int | None = None, final: bool = False) -> None:
        """Print the matching events written since the last call, or only the `last` of them.

        `final` is for a single reading: an unfinished last line is skipped, not waited for.
        """
        rooms = (parse_events(lines, self.warn) for lines in self.tails.lines(final))
        events = filter(self.selected.matches, heapq.merge(*rooms, key=attrgetter("time")))
        for event in events if last is None else deque(events, maxlen=last):
            self.printer.print(event)
        self.printer.flush()

    def follow(self, last: int | None) -> None:
        """Print the matching events so far (the `last` of them), then new ones, forever."""
        self.print_new(last)
        while True:
            time.sleep(POLL_INTERVAL)
            self.print_new()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatd-transcript",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--config",
        "-c",
        type=Path,
        metavar="FILE",
        help=f"read [transcripts] directory from {CONFIG_HELP}",
    )
    where.add_argument("--dir", "-d", type=Path, metavar="DIR", help="the transcript directory")
    parser.add_argument("--room", "-r", type=room_name, help="only this room (default: all rooms)")
    parser.add_argument("--user", "-u", metavar="NAME", help="only events from or about NAME")
    parser.add_argument(
        "--type", "-t", choices=("message", "note", "presence"), help="only this type"
    )
    parser.add_argument(
        "--since",
        type=time_argument,
        metavar="TIME",
        help="only events at or after TIME (ISO date or time, UTC unless it has an offset)",
    )
    parser.add_argument(
        "--until", type=time_argument, metavar="TIME", help="only events before TIME"
    )
    parser.add_argument(
        "--grep",
        "-g",
        metavar="TEXT",
        help="only messages whose text contains TEXT (ignoring case)",
    )
    parser.add_argument(
        "--json", "-j", action="store_true", help="print the transcript lines unchanged (JSONL)"
    )
    parser.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new events, like tail -F"
    )
    parser.add_argument(
        "--lines",
        "-n",
        type=count,
        metavar="N",
        help="start with only the last N matching events (-n 0: none)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no notes about skipped lines")
    return parser


def room_name(text: str) -> str:
    if not ROOM_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a room name: {text!r}")
    return text


def time_argument(text: str) -> datetime:
    try:
        return utc_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {text!r}") from None


def count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["erase"]:
        from chatd import erasure

        return erasure.main(argv[1:])
    args = build_parser().parse_args(argv)

    def warn(message: str) -> None:
        if not args.quiet:
            print(f"chatd-transcript: {message}", file=sys.stderr, flush=True)

    try:
        directory = args.dir or load_daemon_config(args.config).transcripts.directory
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    if not directory.is_dir():
        print(f"chatd-transcript: {directory}: no such directory", file=sys.stderr)
        return 1
    if args.room and not args.follow and not segment_paths(directory, args.room):
        print(
            f"chatd-transcript: no transcript of room {args.room} in {directory}", file=sys.stderr
        )
        return 1
    selected = EventFilter(args.user, args.type, args.since, args.until, args.grep)
    out = sys.stdout.buffer
    printer = JSONPrinter(out) if args.json else ReadablePrinter(out)
    tails = DirectoryTail(directory, args.room, warn)
    reader = TranscriptReader(tails, selected, printer, warn)
    try:
        if args.follow:
            reader.follow(args.lines)
        else:
            reader.print_new(args.lines, final=True)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit-time flush of
        # stdout from failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        tails.close()
    return 0
