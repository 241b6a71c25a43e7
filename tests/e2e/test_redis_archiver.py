"""The archiver (chatd/redis/archiver.py) against a real redis-server, run as `chatd archive`.

Rooms are filled as the daemon fills them: by calling chatd/redis/post.lua. What must hold:
every event in the room's transcript once, in seq order, byte for byte the line Redis holds;
the stream trimmed to what joins and resumes need only after the write; nothing written twice
by an archiver that died before recording how far it got; one archiver at a time.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chatd_harness import fill_up, wait_for, write_ini

from chatd.transcript import segment_paths

CHATD = Path(sys.executable).parent / "chatd"
POST = (Path(__file__).resolve().parents[2] / "chatd" / "redis" / "post.lua").read_bytes()
PREFIX = "chatd"
KEEP = 3  # [history] memory_events in these tests: what the stream keeps after archiving


def post(redis, room: str, number: int, epoch: str = "E1", day: int = 1) -> bytes:
    """Post one message as the daemon does (post.lua); returns the line it must have made."""
    head = f'{{"type":"message","room":"{room}",'
    tail = (
        f'"ts":"2026-12-{day:02d}T06:00:{number % 60:02d}.000Z","from":"ann","name":"Ann",'
        f'"id":"m{number}","text":"hi {number}"}}'
    )
    keys = [
        f"{PREFIX}:{{{room}}}:meta",
        f"{PREFIX}:{{{room}}}:log",
        f"{PREFIX}:{{{room}}}:retry:3:annm{number}",
        f"{PREFIX}:{{{room}}}:count",
        f"{PREFIX}:{{{room}}}:names",
        f"{PREFIX}:node:n1:held",
        f"{PREFIX}:unarchived",
        f"{PREFIX}:rooms",
    ]
    args = [head, tail, epoch, 0, 0, "ann", "Ann", room, f"{PREFIX}:{{{room}}}:events", "", 0]
    got_epoch, seq, stored = redis.command("EVAL", POST, len(keys), *keys, *args)
    assert stored == 1
    return f'{head}"epoch":"{got_epoch.decode()}","seq":{seq},{tail}'.encode()


def config(tmp_path: Path, redis, **transcripts) -> Path:
    return write_ini(
        tmp_path / "chatd.ini",
        {
            "redis": {"url": redis.url, "node_lease": "1s", "connect_timeout": "0.5s"},
            "transcripts": {"directory": tmp_path / "transcripts", **transcripts},
            "history": {"memory_events": KEEP, "replay_events": KEEP},
        },
    )


def archive(ini: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHATD), "archive", "--config", str(ini), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def transcript(tmp_path: Path, room: str) -> list[bytes]:
    """Every line of the room's transcript files, oldest file first."""
    directory = tmp_path / "transcripts"
    if not directory.exists():
        return []  # `chatd archive` has not started yet
    return [
        line for path in segment_paths(directory, room) for line in path.read_bytes().splitlines()
    ]


def stream_seqs(redis, room: str) -> list[int]:
    entries = redis.command("XRANGE", f"{PREFIX}:{{{room}}}:log", "-", "+")
    return [int(entry_id.split(b"-")[0]) for entry_id, _fields in entries]


def unarchived(redis) -> set[bytes]:
    return set(redis.command("SMEMBERS", f"{PREFIX}:unarchived"))


def test_every_event_is_written_once_in_order_and_the_stream_is_trimmed(tmp_path, redis_server):
    lobby = [post(redis_server, "lobby", n) for n in range(1, 8)]
    help_ = [post(redis_server, "help", n) for n in range(1, 3)]
    ini = config(tmp_path, redis_server)

    first = archive(ini, "--once")

    assert first.returncode == 0, first.stderr
    assert "archived 9 events of 2 rooms" in first.stdout
    assert transcript(tmp_path, "lobby") == lobby
    assert transcript(tmp_path, "help") == help_
    assert stream_seqs(redis_server, "lobby") == [5, 6, 7]
    assert stream_seqs(redis_server, "help") == [1, 2]
    assert redis_server.command("GET", f"{PREFIX}:{{lobby}}:archived") == b"E1 7"
    assert unarchived(redis_server) == set()
    assert redis_server.command("GET", f"{PREFIX}:archiver") is None  # released

    before = (tmp_path / "transcripts" / "lobby.jsonl").read_bytes()
    second = archive(ini, "--once")
    assert second.returncode == 0, second.stderr
    assert "archived 0 events" in second.stdout
    assert (tmp_path / "transcripts" / "lobby.jsonl").read_bytes() == before

    more = [post(redis_server, "lobby", n) for n in range(8, 10)]
    assert archive(ini, "--once").returncode == 0
    assert transcript(tmp_path, "lobby") == lobby + more
    assert stream_seqs(redis_server, "lobby") == [7, 8, 9]


def test_a_backlog_longer_than_a_batch_is_drained_in_one_run(tmp_path, redis_server):
    lines = [post(redis_server, "lobby", n) for n in range(1, 301)]

    result = archive(config(tmp_path, redis_server), "--once")

    assert result.returncode == 0, result.stderr
    assert transcript(tmp_path, "lobby") == lines
    assert stream_seqs(redis_server, "lobby") == [298, 299, 300]
    assert unarchived(redis_server) == set()


def test_an_archiver_that_died_before_recording_writes_nothing_twice(tmp_path, redis_server):
    lines = [post(redis_server, "lobby", n) for n in range(1, 6)]
    # It wrote (and flushed) seqs 1-3 and died before archived.lua recorded them.
    directory = tmp_path / "transcripts"
    directory.mkdir()
    (directory / "lobby.jsonl").write_bytes(b"".join(line + b"\n" for line in lines[:3]))

    result = archive(config(tmp_path, redis_server), "--once")

    assert result.returncode == 0, result.stderr
    assert "archived 2 events" in result.stdout
    assert transcript(tmp_path, "lobby") == lines
    assert redis_server.command("GET", f"{PREFIX}:{{lobby}}:archived") == b"E1 5"


def test_a_transcript_complete_but_unrecorded_is_recorded_and_trimmed(tmp_path, redis_server):
    lines = [post(redis_server, "lobby", n) for n in range(1, 6)]
    redis_server.command("SET", f"{PREFIX}:{{lobby}}:archived", "E1 2")
    directory = tmp_path / "transcripts"
    directory.mkdir()
    (directory / "lobby.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))

    result = archive(config(tmp_path, redis_server), "--once")

    assert result.returncode == 0, result.stderr
    assert transcript(tmp_path, "lobby") == lines
    assert redis_server.command("GET", f"{PREFIX}:{{lobby}}:archived") == b"E1 5"
    assert stream_seqs(redis_server, "lobby") == [3, 4, 5]
    assert unarchived(redis_server) == set()


def test_a_lease_held_by_another_node_refuses_the_run(tmp_path, redis_server):
    post(redis_server, "lobby", 1)
    redis_server.command("SET", f"{PREFIX}:archiver", "node-b", "PX", 60000)

    result = archive(config(tmp_path, redis_server), "--once")

    assert result.returncode == 1
    assert "the archiver lease is held by node-b" in result.stderr
    assert transcript(tmp_path, "lobby") == []
    assert stream_seqs(redis_server, "lobby") == [1]
    assert redis_server.command("GET", f"{PREFIX}:archiver") == b"node-b"


def test_unreachable_redis_is_a_clear_error(tmp_path, redis_server):
    ini = config(tmp_path, redis_server)
    redis_server.kill()

    result = archive(ini, "--once")

    assert result.returncode == 1
    assert f"cannot reach Redis at 127.0.0.1:{redis_server.port}" in result.stderr


def test_a_new_epoch_in_redis_follows_the_old_one_in_the_transcript(tmp_path, redis_server):
    ini = config(tmp_path, redis_server)
    old = [post(redis_server, "lobby", n, epoch="E1") for n in range(1, 5)]
    assert archive(ini, "--once").returncode == 0
    # Redis lost the room (a flush, a new server): the next post starts epoch E2 at seq 1.
    redis_server.command("DEL", f"{PREFIX}:{{lobby}}:meta", f"{PREFIX}:{{lobby}}:log")
    new = [post(redis_server, "lobby", n, epoch="E2") for n in range(1, 3)]
    assert b'"epoch":"E2","seq":1,' in new[0]

    result = archive(ini, "--once")

    assert result.returncode == 0, result.stderr
    assert transcript(tmp_path, "lobby") == old + new
    assert redis_server.command("GET", f"{PREFIX}:{{lobby}}:archived") == b"E2 2"
    assert "has a new epoch E2 in Redis" in result.stderr


def test_rotation_applies_to_what_the_archiver_writes(tmp_path, redis_server):
    ini = config(tmp_path, redis_server, rotate="never", rotate_size=500)
    first = [post(redis_server, "lobby", n) for n in range(1, 4)]
    assert archive(ini, "--once").returncode == 0
    second = [post(redis_server, "lobby", n) for n in range(4, 7)]

    assert archive(ini, "--once").returncode == 0

    paths = segment_paths(tmp_path / "transcripts", "lobby")
    assert [path.name for path in paths] == ["lobby.2026-12-01T060001Z.jsonl", "lobby.jsonl"]
    assert paths[0].read_bytes().splitlines() == first
    assert paths[1].read_bytes().splitlines() == second


def test_daily_rotation_applies_too(tmp_path, redis_server):
    ini = config(tmp_path, redis_server)  # rotate = daily, the default
    first = [post(redis_server, "lobby", n, day=1) for n in range(1, 3)]
    second = [post(redis_server, "lobby", n, day=2) for n in range(3, 5)]

    assert archive(ini, "--once").returncode == 0  # one batch: never split between files
    third = [post(redis_server, "lobby", n, day=3) for n in range(5, 6)]
    assert archive(ini, "--once").returncode == 0

    paths = segment_paths(tmp_path / "transcripts", "lobby")
    assert [path.name for path in paths] == ["lobby.2026-12-01T060001Z.jsonl", "lobby.jsonl"]
    assert paths[0].read_bytes().splitlines() == first + second
    assert paths[1].read_bytes().splitlines() == third


def test_events_missing_from_the_stream_are_reported_not_skipped_quietly(tmp_path, redis_server):
    lines = [post(redis_server, "lobby", n) for n in range(1, 6)]
    redis_server.command("XDEL", f"{PREFIX}:{{lobby}}:log", "2-0", "3-0")

    result = archive(config(tmp_path, redis_server), "--once")

    assert result.returncode == 1
    assert "lobby: seq 2-3 of epoch E1" in result.stderr
    assert "events 2-3 of epoch E1 are not in Redis" in result.stderr  # the critical log line
    assert transcript(tmp_path, "lobby") == [lines[0], *lines[3:]]


@pytest.fixture
def full_fs(small_fs) -> Path:
    """A 1 MiB tmpfs, filled up (as the e2e write-failure tests' `small_fs`)."""
    (small_fs / "transcripts").mkdir()
    fill_up(small_fs)
    return small_fs


def test_a_full_disk_keeps_every_event_in_redis_and_says_so(tmp_path, redis_server, full_fs):
    lines = [post(redis_server, "lobby", n) for n in range(1, 6)]
    ini = write_ini(
        tmp_path / "chatd.ini",
        {
            "redis": {"url": redis_server.url},
            "transcripts": {"directory": full_fs / "transcripts"},
            "history": {"memory_events": KEEP, "replay_events": KEEP},
        },
    )

    result = archive(ini, "--once")

    assert result.returncode == 1
    assert "room lobby not archived: ENOSPC" in result.stderr
    assert "cannot write the transcript of room lobby" in result.stderr
    assert stream_seqs(redis_server, "lobby") == [1, 2, 3, 4, 5]
    assert unarchived(redis_server) == {b"lobby"}
    assert redis_server.command("GET", f"{PREFIX}:{{lobby}}:archived") is None

    (full_fs / "filler").unlink()
    healed = archive(ini, "--once")
    assert healed.returncode == 0, healed.stderr
    assert (full_fs / "transcripts" / "lobby.jsonl").read_bytes().splitlines() == lines
    assert stream_seqs(redis_server, "lobby") == [3, 4, 5]


def start_archiver(ini: Path, log: Path) -> subprocess.Popen:
    """`chatd archive` running (until SIGTERM), its output in `log`."""
    with open(log, "wb") as output:
        return subprocess.Popen(
            [str(CHATD), "archive", "--config", str(ini)],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def test_running_archiver_follows_posts_stops_on_a_lost_lease_and_releases_at_exit(
    tmp_path, redis_server
):
    ini = config(tmp_path, redis_server)
    log = tmp_path / "archive.log"
    process = start_archiver(ini, log)
    try:
        lines = [post(redis_server, "lobby", n) for n in range(1, 4)]
        wait_for(lambda: transcript(tmp_path, "lobby") == lines, 10, "the first events")

        # Another node takes the lease over (as if this one had been cut off meanwhile).
        redis_server.command("SET", f"{PREFIX}:archiver", "node-b", "PX", 60000)
        wait_for(lambda: b"lost the archiver lease to node-b" in log.read_bytes(), 10, "loss")
        later = [post(redis_server, "lobby", n) for n in range(4, 6)]
        time.sleep(1.0)  # five passes' worth, had it gone on
        assert transcript(tmp_path, "lobby") == lines
        assert stream_seqs(redis_server, "lobby") == [1, 2, 3, 4, 5]

        redis_server.command("DEL", f"{PREFIX}:archiver")  # node-b is gone
        wait_for(lambda: transcript(tmp_path, "lobby") == lines + later, 10, "the takeover")
        holder = redis_server.command("GET", f"{PREFIX}:archiver")
        assert holder.startswith(b"chatd-archive@")
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(10)
    assert returncode == 0, log.read_text()
    assert redis_server.command("GET", f"{PREFIX}:archiver") is None
    assert b"released the archiver lease" in log.read_bytes()


def test_running_archiver_waits_out_a_redis_restart(tmp_path, redis_server):
    ini = config(tmp_path, redis_server)
    log = tmp_path / "archive.log"
    process = start_archiver(ini, log)
    try:
        lines = [post(redis_server, "lobby", n) for n in range(1, 3)]
        wait_for(lambda: transcript(tmp_path, "lobby") == lines, 10, "the first events")
        redis_server.kill()
        wait_for(lambda: b"archiving paused" in log.read_bytes(), 10, "the outage logged")
        redis_server.start()
        lines += [post(redis_server, "lobby", n) for n in range(3, 5)]
        wait_for(lambda: transcript(tmp_path, "lobby") == lines, 15, "the events after it")
        assert b"Redis answers the archiver again" in log.read_bytes()
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(10)
    assert returncode == 0, log.read_text()


# -- the two scripts, called directly -------------------------------------------------------------

SCRIPTS = Path(__file__).resolve().parents[2] / "chatd" / "redis"
LEASE_KEY = f"{PREFIX}:archiver"


def lease(redis, node: str, ms: int):
    return redis.command("EVAL", (SCRIPTS / "lease.lua").read_bytes(), 1, LEASE_KEY, node, ms)


def archived(redis, node: str, epoch: str, seq: int, keep: int = 1, room: str = "lobby"):
    keys = [
        f"{PREFIX}:{{{room}}}:archived",
        f"{PREFIX}:{{{room}}}:log",
        f"{PREFIX}:{{{room}}}:meta",
        f"{PREFIX}:unarchived",
        LEASE_KEY,
    ]
    script = (SCRIPTS / "archived.lua").read_bytes()
    return redis.command("EVAL", script, len(keys), *keys, node, epoch, seq, keep, room)


def test_the_lease_is_renewed_and_released_only_by_its_holder(redis_server):
    assert lease(redis_server, "a", 60000) == b"a"  # taken
    assert lease(redis_server, "b", 60000) == b"a"  # refused
    redis_server.command("PEXPIRE", LEASE_KEY, 50)
    assert lease(redis_server, "a", 60000) == b"a"  # renewed
    assert redis_server.command("PTTL", LEASE_KEY) > 50000
    assert lease(redis_server, "b", 0) == b"a"  # b cannot release a's lease
    assert redis_server.command("GET", LEASE_KEY) == b"a"
    assert lease(redis_server, "a", 0) is None
    assert lease(redis_server, "b", 60000) == b"b"


def test_recording_needs_the_lease_and_keeps_a_room_with_newer_events(redis_server):
    for n in range(1, 6):
        post(redis_server, "lobby", n)
    lease(redis_server, "a", 60000)

    assert archived(redis_server, "b", "E1", 5) == -1  # not the holder: nothing done
    assert stream_seqs(redis_server, "lobby") == [1, 2, 3, 4, 5]
    assert redis_server.command("GET", f"{PREFIX}:{{lobby}}:archived") is None

    # Seq 5 was posted after the archiver read the room: recorded through 3, still work.
    assert archived(redis_server, "a", "E1", 3) == 0
    assert stream_seqs(redis_server, "lobby") == [3, 4, 5]
    assert unarchived(redis_server) == {b"lobby"}
    assert archived(redis_server, "a", "E1", 5) == 1
    assert unarchived(redis_server) == set()


def test_recording_an_old_epoch_trims_nothing_of_the_new_one(redis_server):
    post(redis_server, "lobby", 1, epoch="E1")
    redis_server.command("DEL", f"{PREFIX}:{{lobby}}:meta", f"{PREFIX}:{{lobby}}:log")
    for n in range(1, 4):
        post(redis_server, "lobby", n, epoch="E2")
    lease(redis_server, "a", 60000)

    assert archived(redis_server, "a", "E1", 3) == 0

    assert stream_seqs(redis_server, "lobby") == [1, 2, 3]
    assert unarchived(redis_server) == {b"lobby"}
