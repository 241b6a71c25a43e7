"""Transcripts that cannot be written: a full file system, a directory that refuses new files.

Each failure must give the client `unavailable`, keep its connection healthy, leave no seq gap
and no member who is not recorded, turn /healthz to 503 until it is fixed, and then everything
works again without a restart. The file systems are real: a small tmpfs filled up, and a
directory made immutable with chattr (the tests need root, as CI has; they skip otherwise).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error

import pytest
from chatd_harness import assert_contiguous, fill_up, wait_for


def _health(daemon) -> tuple[int, dict]:
    try:
        status, _type, body = daemon.get("ws", "/healthz")
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, json.loads(body)


def test_a_full_disk_answers_unavailable_leaves_no_gap_and_heals_by_itself(
    make_daemon, clients, small_fs
):
    daemon = make_daemon(
        start=False, transcripts={"directory": small_fs / "transcripts", "min_free_space": 0}
    )
    daemon.transcripts = small_fs / "transcripts"
    daemon.start()
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    joined = alice.join("lobby")
    before, _ack = alice.say("lobby", "before the disk filled", "m1")
    assert _health(daemon)[0] == 200

    filler = fill_up(small_fs)
    status, body = _health(daemon)
    assert (status, body["checks"]["transcripts_writable"]) == (503, False)
    # Long enough to need a new page of the file system (a short line may still fit in the
    # transcript's last one); several failures, and one log line for them all.
    lost = "x" * 4000
    for number in range(2, 6):
        alice.send({"type": "say", "room": "lobby", "text": lost, "id": f"m{number}"})
        alice.expect(type="error", code="unavailable", ref=f"m{number}")

    filler.unlink()
    wait_for(lambda: _health(daemon)[0] == 200, 5, "/healthz to be 200 again")
    after, _ack = alice.say("lobby", "after the disk was freed", "m6")
    assert after["seq"] == before["seq"] + 1, "a failed batch used up seqs"
    events = daemon.transcript("lobby")
    assert_contiguous(events, 1)
    assert [e["text"] for e in events if e["type"] == "message"] == [
        "before the disk filled",
        "after the disk was freed",
    ]
    assert joined["epoch"] == events[-1]["epoch"]
    log = daemon.log_of_last_start
    assert log.count("cannot write the transcript") == 1, log
    assert "transcripts are writable again, after 4 failed batches (ENOSPC)" in log
    assert "transcripts not ready" in log and "transcripts ready again" in log


def test_a_directory_that_refuses_new_files_refuses_the_join_and_keeps_the_connection(
    make_daemon, clients
):
    if os.geteuid() != 0:
        pytest.skip("chattr +i needs root")
    daemon = make_daemon()
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    alice.join("lobby")
    immutable = subprocess.run(
        ["chattr", "+i", str(daemon.transcripts)], capture_output=True, text=True, check=False
    )
    if immutable.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {immutable.stderr.strip()}")
    try:
        alice.send({"type": "join", "room": "newroom", "id": "j1"})
        alice.expect(type="joined", room="newroom", ref="j1")
        alice.expect(type="error", code="unavailable", ref="j1")
        # Not a member after all, and the connection is healthy.
        alice.send({"type": "say", "room": "newroom", "text": "hi", "id": "s1"})
        alice.expect(type="error", code="not_joined", ref="s1")
        alice.say("lobby", "still here", "s2")
        assert _health(daemon)[0] == 503
    finally:
        subprocess.run(["chattr", "-i", str(daemon.transcripts)], check=True)
    wait_for(lambda: _health(daemon)[0] == 200, 5, "/healthz to be 200 again")
    joined = alice.join("newroom")
    assert joined["seq"] == 0, "the failed join used up a seq"
    assert daemon.transcript("newroom")[0]["seq"] == 1
    daemon.stop()  # promptly: no connection is stuck
    assert "Traceback" not in daemon.log, daemon.log


def test_free_space_below_the_floor_makes_the_daemon_unready(make_daemon):
    daemon = make_daemon(transcripts={"min_free_space": "1000000G"})
    status, body = _health(daemon)
    assert (status, body["checks"]["free_space"]) == (503, False)
    assert body["checks"]["transcripts_writable"] is True
    assert "free space below [transcripts] min_free_space" in daemon.log_of_last_start
