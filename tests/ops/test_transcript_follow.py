"""`chatd-transcript --follow`: new lines, once each and in order, across rotations and rooms.

The follower is the real console script; the test plays the daemon, writing and rotating
transcript files the way it does. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

WAIT = 5.0  # seconds: the longest any expected line may take (the follower polls every 0.2 s)
QUIET_SPELL = 0.6  # seconds without output that show nothing more is coming


def line(room: str, seq: int, text: str = "hello") -> bytes:
    record = {
        "type": "message",
        "room": room,
        "epoch": "e1",
        "seq": seq,
        "ts": f"2026-11-24T21:{seq:02d}:00.000Z",
        "from": "alice",
        "id": f"m{seq}",
        "text": text,
    }
    return json.dumps(record, separators=(",", ":")).encode()


class Follower:
    """A running `chatd-transcript --follow`; threads collect its stdout and stderr lines."""

    def __init__(self, script: Path, *args: object):
        self.process = subprocess.Popen(
            [script, "--follow", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.stdout: queue.Queue[bytes] = queue.Queue()
        self.stderr: queue.Queue[bytes] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self.stdout),
                (self.process.stderr, self.stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream, lines: queue.Queue) -> None:
        for output in stream:
            lines.put(output)

    def expect(self, *expected: bytes, stream: str = "stdout") -> None:
        """The next lines are exactly these (each within WAIT seconds)."""
        lines = getattr(self, stream)
        got = []
        try:
            while len(got) < len(expected):
                got.append(lines.get(timeout=WAIT).rstrip(b"\n"))
        except queue.Empty:
            pass
        assert got == list(expected)

    def expect_nothing(self) -> None:
        """No stdout for QUIET_SPELL seconds."""
        with contextlib.suppress(queue.Empty):
            pytest.fail(f"unexpected output: {self.stdout.get(timeout=QUIET_SPELL)!r}")

    def interrupt(self) -> int:
        """Ctrl-C; returns the exit status, once both streams are read to their end."""
        self.process.send_signal(signal.SIGINT)
        status = self.process.wait(timeout=WAIT)
        for reader in self._readers:
            reader.join(timeout=WAIT)
        return status

    def rest(self, stream: str) -> list[bytes]:
        lines = getattr(self, stream)
        return [lines.get_nowait() for _ in range(lines.qsize())]


@pytest.fixture
def follow(installed_script) -> Iterator[Callable[..., Follower]]:
    followers = []

    def start(*args: object) -> Follower:
        followers.append(Follower(installed_script("chatd-transcript"), *args))
        return followers[-1]

    yield start
    for follower in followers:
        if follower.process.poll() is None:
            follower.process.kill()
            follower.process.wait(timeout=WAIT)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def rotate(directory: Path, room: str, stamp: str, first_line: bytes) -> None:
    """What the daemon does: rename ROOM.jsonl, start a new one."""
    (directory / f"{room}.jsonl").rename(directory / f"{room}.{stamp}.jsonl")
    (directory / f"{room}.jsonl").write_bytes(first_line + b"\n")


def test_every_line_once_in_order_across_partial_writes_rotations_and_new_rooms(follow, tmp_path):
    lobby = tmp_path / "lobby.jsonl"
    lobby.write_bytes(line("lobby", 1) + b"\n" + line("lobby", 2) + b"\n")
    follower = follow("--dir", tmp_path, "--json")
    follower.expect(line("lobby", 1), line("lobby", 2))

    # A line written in two parts comes out whole, once, when its newline arrives.
    third = line("lobby", 3)
    append(lobby, third[:20])
    follower.expect_nothing()
    append(lobby, third[20:] + b"\n")
    follower.expect(third)

    # A last line lands in the old file just before the rotation renames it.
    append(lobby, line("lobby", 4) + b"\n")
    rotate(tmp_path, "lobby", "2026-11-24T210400Z", line("lobby", 5))
    follower.expect(line("lobby", 4), line("lobby", 5))

    # Two rotations in a row, faster than the follower polls.
    append(lobby, line("lobby", 6) + b"\n")
    rotate(tmp_path, "lobby", "2026-11-24T210500Z", line("lobby", 7))
    rotate(tmp_path, "lobby", "2026-11-24T210700Z", line("lobby", 8))
    follower.expect(line("lobby", 6), line("lobby", 7), line("lobby", 8))

    # A room created while following.
    (tmp_path / "annex.jsonl").write_bytes(line("annex", 9) + b"\n")
    follower.expect(line("annex", 9))

    follower.expect_nothing()  # and no line a second time
    assert follower.interrupt() == 130
    assert (follower.rest("stdout"), follower.rest("stderr")) == ([], [])


def test_n_starts_with_the_last_n_events_and_a_torn_line_left_by_a_rotation_is_noted(
    follow, tmp_path
):
    lobby = tmp_path / "lobby.jsonl"
    lobby.write_bytes(line("lobby", 1, "old news") + b"\n" + line("lobby", 2, "news") + b"\n")
    follower = follow("--dir", tmp_path, "-n", "1")
    follower.expect(b"-- 2026-11-24 --", b"21:02:00 #lobby <alice> news")
    append(lobby, line("lobby", 3, "fresh") + b"\n")
    follower.expect(b"21:03:00 #lobby <alice> fresh")

    torn_at = lobby.stat().st_size
    append(lobby, line("lobby", 4)[:30])  # the daemon died mid-write, then rotated on restart
    rotate(tmp_path, "lobby", "2026-11-24T210100Z", line("lobby", 5, "after the crash"))
    follower.expect(b"21:05:00 #lobby <alice> after the crash")
    follower.expect(
        f"chatd-transcript: lobby.jsonl: skipped a torn last line at byte {torn_at}".encode(),
        stream="stderr",
    )
    assert follower.interrupt() == 130


def test_a_truncated_file_is_read_again_from_its_start(follow, tmp_path):
    """As logrotate's copytruncate leaves it."""
    lobby = tmp_path / "lobby.jsonl"
    lobby.write_bytes(line("lobby", 1) + b"\n" + line("lobby", 2) + b"\n")
    follower = follow("--dir", tmp_path, "--json")
    follower.expect(line("lobby", 1), line("lobby", 2))
    lobby.write_bytes(b"")
    follower.expect(
        b"chatd-transcript: lobby.jsonl: truncated; reading it again from the start",
        stream="stderr",
    )
    append(lobby, line("lobby", 3) + b"\n")
    follower.expect(line("lobby", 3))
    assert follower.interrupt() == 130


def test_following_one_room_waits_for_it_to_appear(follow, tmp_path):
    (tmp_path / "lobby.jsonl").write_bytes(line("lobby", 1) + b"\n")
    follower = follow("--dir", tmp_path, "--json", "--room", "annex")
    append(tmp_path / "lobby.jsonl", line("lobby", 2) + b"\n")
    (tmp_path / "annex.jsonl").write_bytes(line("annex", 3) + b"\n")
    follower.expect(line("annex", 3))
    follower.expect_nothing()
    assert follower.interrupt() == 130
