"""Per-connection limits through a real daemon: rate, flood, hello deadline, connections per IP.

The other e2e tests raise the rate limit out of the way (conftest.py); these set their own.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import time
from pathlib import Path

import pytest
from chatd_harness import wait_for
from websockets.exceptions import InvalidStatus


def test_a_flooding_client_is_refused_then_closed_and_nobody_else_notices(make_daemon, clients):
    daemon = make_daemon(
        # A burst of 5 frames, and then practically nothing: one frame per 100 s.
        limits={"messages_per_second": 0.01, "message_burst": 5, "flood_close_after": 3}
    )
    alice, bob = clients(daemon.url("ws")), clients(daemon.url("wss"))
    carol = clients(daemon.url("ws"))
    alice.hello("alice")  # frame 1 of 5
    alice.join("lobby")  # 2
    bob.hello("bob")
    bob.join("lobby")
    carol.hello("carol")
    carol.join("lobby")
    alice.next_event()  # bob's presence
    alice.next_event()  # carol's
    bob.next_event()  # carol's
    said = [
        alice.say("lobby", f"within the burst {number}", f"a-{number}")[0] for number in range(3)
    ]
    for message in said:
        assert bob.next_event() == message
        assert carol.next_event() == message

    # Over the limit: refused, not posted, connection kept...
    for number in range(2):
        alice.send({"type": "say", "room": "lobby", "text": "too fast", "id": f"x-{number}"})
        error = alice.recv()
        assert (error["type"], error["code"]) == ("error", "rate_limited"), error
    # ... until flood_close_after frames in a row were refused.
    alice.send({"type": "say", "room": "lobby", "text": "too fast", "id": "x-2"})
    assert alice.expect_closed()[0] == 1008

    leave = bob.next_event()
    assert (leave["user"], leave["event"]) == ("alice", "leave")
    assert carol.next_event() == leave
    message, _ack = bob.say("lobby", "bob has his own budget", "b-1")
    assert message["seq"] == leave["seq"] + 1
    assert carol.next_event() == message
    reply, _ack = carol.say("lobby", "and so has carol", "c-1")
    assert bob.next_event() == reply
    texts = [
        event.get("text") for event in daemon.transcript("lobby") if event["type"] == "message"
    ]
    assert texts == [
        *(message["text"] for message in said),
        "bob has his own budget",
        "and so has carol",
    ]


def test_no_hello_in_time_closes_with_1008(make_daemon, clients):
    daemon = make_daemon(auth={"hello_timeout": "1s"})
    silent, prompt = clients(daemon.url("ws")), clients(daemon.url("wss"))
    prompt.hello("prompt")
    assert silent.expect_closed()[0] == 1008
    # A welcomed connection has no deadline.
    prompt.join("lobby")
    prompt.send({"type": "who", "room": "lobby"})
    assert prompt.recv()["members"] == ["prompt"]


def test_connections_per_address_are_capped(make_daemon, clients):
    daemon = make_daemon(limits={"max_connections_per_ip": 2})
    first, second = clients(daemon.url("ws")), clients(daemon.url("wss"))
    with pytest.raises(InvalidStatus) as refused:
        clients(daemon.url("ws"))
    assert refused.value.response.status_code == 429
    # The admitted ones work; and a closed connection frees its place.
    first.hello("first")
    second.close()
    wait_for(lambda: _connect_or_none(clients, daemon.url("wss")), 5, "a free place")


def _connect_or_none(clients, url):
    try:
        return clients(url)
    except InvalidStatus as refused:
        assert refused.response.status_code == 429
        return None


OPEN_FILES = 64


def test_out_of_file_descriptors_the_daemon_backs_off_and_keeps_serving(make_daemon, clients):
    """Started with `ulimit -n 64` (soft and hard), so it cannot raise it: it says so at
    start; past the limit it neither spins nor floods its log, established clients keep
    chatting, and it accepts again once descriptors are freed."""
    daemon = make_daemon(start=False)
    limit = (OPEN_FILES, OPEN_FILES)
    daemon.start(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit))
    assert "LimitNOFILE=" in daemon.log_of_last_start
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    alice.join("lobby")

    hogs = []
    for _ in range(OPEN_FILES + 20):  # past the limit; the rest wait in the listen backlog
        with contextlib.suppress(OSError):
            hogs.append(socket.create_connection(("127.0.0.1", daemon.ports["ws"]), timeout=1))
    wait_for(lambda: "cannot accept connections" in daemon.log_of_last_start, 10, "the pause line")
    cpu_before = _cpu_seconds(daemon.process.pid)
    time.sleep(3)  # a spinning daemon would burn ~3 s of CPU and log thousands of lines
    assert _cpu_seconds(daemon.process.pid) - cpu_before < 1.0
    assert len(daemon.log_of_last_start.splitlines()) < 100, daemon.log_of_last_start[-3000:]
    alice.say("lobby", "still here", "a-1")

    for hog in hogs:
        hog.close()
    wait_for(
        lambda: "accepting connections on" in daemon.log_of_last_start, 10, "the recovery line"
    )
    bob = clients(daemon.url("ws"))
    bob.hello("bob")
    daemon.stop()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_cheap_frames_over_their_budget_are_refused_but_never_close(make_daemon, clients):
    """`who` has a budget of its own: a client asking too often is told `rate_limited`, is
    never closed for it, and still has its whole budget for saying things."""
    daemon = make_daemon(
        limits={
            "messages_per_second": 0.01,
            "message_burst": 5,
            "flood_close_after": 3,
            "cheap_per_second": 1,
            "cheap_burst": 3,
        }
    )
    asker, other = clients(daemon.url("ws")), clients(daemon.url("wss"))
    asker.hello("asker")  # costly frame 1 of 5
    asker.join("lobby")  # 2
    other.hello("other")
    other.join("lobby")
    asker.next_event()  # other's presence
    count = 40
    for number in range(count):
        asker.send({"type": "who", "room": "lobby", "id": f"w-{number}"})
    replies = [asker.recv() for _ in range(count)]
    answered = [frame["ref"] for frame in replies if frame["type"] == "members"]
    limited = [frame for frame in replies if frame["type"] == "error"]
    assert all(frame["code"] == "rate_limited" for frame in limited), limited
    assert 3 <= len(answered) <= 5, answered  # the burst, and what refilled meanwhile
    # Every who is answered, each refusal with the who's own id.
    assert sorted(answered + [frame["ref"] for frame in limited]) == sorted(
        f"w-{number}" for number in range(count)
    )
    # Not closed, and the budget for messages is untouched: 3 more says are within it.
    for number in range(3):
        message, _ack = asker.say("lobby", f"still allowed {number}", f"s-{number}")
        assert other.next_event() == message


def test_the_listeners_queue_listen_backlog_connections(make_daemon):
    """`ss` reports a listening socket's backlog as its Send-Q."""
    daemon = make_daemon(limits={"listen_backlog": 777})
    for kind in ("ws", "wss"):
        listing = subprocess.run(
            ["ss", "-ltnH", f"sport = :{daemon.ports[kind]}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert listing[0] == "LISTEN" and int(listing[2]) == 777, listing
