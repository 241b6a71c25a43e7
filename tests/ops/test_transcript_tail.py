"""`RoomTail` in-process: every line once and in order, whatever the rotations do meanwhile."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import chatd.transcript_tail
from chatd.transcript import Rotation, TranscriptWriter, segment_paths
from chatd.transcript_tail import RoomTail

BASE_TS = 1_795_000_000.0  # 2026-11-18


def line(seq: int) -> bytes:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(BASE_TS + seq))
    record = {"type": "message", "room": "lobby", "epoch": "e1", "seq": seq, "ts": ts}
    return json.dumps(record | {"from": "alice", "id": f"m{seq}", "text": "x" * 40}).encode()


def read(tail: RoomTail) -> list[bytes]:
    return [found.data for found in tail.lines()]


def rotate(directory: Path, stamp: str, first_line: bytes) -> None:
    """What the daemon does: rename lobby.jsonl aside, start a new one."""
    (directory / "lobby.jsonl").rename(directory / f"lobby.{stamp}.jsonl")
    (directory / "lobby.jsonl").write_bytes(first_line + b"\n")


def test_a_rotation_while_the_files_are_listed_hides_no_file(tmp_path, monkeypatch):
    (tmp_path / "lobby.jsonl").write_bytes(line(1) + b"\n")
    tail = RoomTail(tmp_path, "lobby", warn=print)
    assert read(tail) == [line(1)]
    rotate(tmp_path, "2026-11-18T000000Z", line(2))

    def listing_then_a_rotation(directory, room):
        """Lists lobby.jsonl holding line 2; by the time it is stat'ed, it holds line 3."""
        monkeypatch.undo()
        paths = segment_paths(directory, room)
        rotate(tmp_path, "2026-11-18T000001Z", line(3))
        return paths

    monkeypatch.setattr(chatd.transcript_tail, "segment_paths", listing_then_a_rotation)
    assert read(tail) == [line(2), line(3)]


def test_every_line_once_in_order_while_the_daemons_writer_rotates_every_few_lines(tmp_path):
    count = 1000
    writer = TranscriptWriter(tmp_path / "lobby.jsonl", Rotation(max_bytes=1024))

    def write() -> None:
        for seq in range(1, count + 1):
            writer.append(line(seq), BASE_TS + seq // 20)  # 20 per second: "-N" names too
            if seq % 3 == 0:
                writer.flush(fsync=False)
        writer.flush(fsync=False)

    thread = threading.Thread(target=write)
    tail = RoomTail(tmp_path, "lobby", warn=print)
    seen: list[bytes] = []
    thread.start()
    deadline = time.monotonic() + 15
    while len(seen) < count and time.monotonic() < deadline:
        seen += read(tail)
    thread.join()
    writer.close()
    tail.close()
    assert len(segment_paths(tmp_path, "lobby")) > 100  # the rotations did happen
    assert seen == [line(seq) for seq in range(1, count + 1)]
