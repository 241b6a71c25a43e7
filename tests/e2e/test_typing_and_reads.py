"""Typing indicators and read markers against a real daemon: typing reaches the other member,
never a transcript, and ends by itself; read markers survive a restart and come back in
`joined`."""

from __future__ import annotations

import time

from chatd_harness import wait_for


def test_typing_reaches_the_other_member_ends_by_itself_and_is_never_recorded(make_daemon, clients):
    daemon = make_daemon(rooms={"typing_timeout": "1s"})
    alice, bob = clients(daemon.url("ws")), clients(daemon.url("wss"))
    alice.hello("alice")
    bob.hello("bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.expect(type="presence", user="bob", event="join")

    started = time.monotonic()
    alice.send({"type": "typing", "room": "lobby", "typing": True})
    assert bob.recv() == {
        "type": "typing",
        "room": "lobby",
        "user": "alice",
        "name": "alice",
        "typing": True,
    }
    # Not renewed: it ends by itself after [rooms] typing_timeout.
    ended = bob.expect(type="typing", user="alice", typing=False)
    assert "seq" not in ended
    assert time.monotonic() - started >= 0.9

    # A message ends it before the message arrives.
    alice.send({"type": "typing", "room": "lobby", "typing": True})
    bob.expect(type="typing", user="alice", typing=True)
    alice.say("lobby", "hello", "m1")
    bob.expect(type="typing", user="alice", typing=False)
    bob.expect(type="message", text="hello")

    kinds = {event["type"] for event in daemon.transcript("lobby")}
    assert kinds == {"presence", "message"}
    assert b"typing" not in daemon.transcript_path("lobby").read_bytes()


def test_read_markers_survive_a_restart_and_come_back_in_joined(make_daemon, clients):
    daemon = make_daemon()
    alice, bob = clients(daemon.url("ws")), clients(daemon.url("ws"))
    alice.hello("alice")
    bob.hello("bob")
    epoch = alice.join("lobby")["epoch"]
    joined = bob.join("lobby")
    assert joined["read"] == {}
    alice.expect(type="presence", user="bob", event="join")
    message, _ack = alice.say("lobby", "did you see this?", "m1")
    bob.expect(type="message", seq=message["seq"])

    bob.send({"type": "read", "room": "lobby", "seq": message["seq"], "id": "r1"})
    told = {"type": "read", "room": "lobby", "user": "bob", "seq": message["seq"]}
    assert alice.recv() == told
    assert bob.recv() == told  # the reader hears it too: stored
    bob.send({"type": "read", "room": "lobby", "seq": 1, "id": "r2"})
    assert bob.recv() == told  # never backwards

    journal = daemon.transcripts / "read-markers.journal"
    wait_for(journal.exists, 5, "the read markers journal")
    alice.close()
    bob.close()
    daemon.restart()

    again = clients(daemon.url("ws"))
    again.hello("bob")
    joined = again.join("lobby")
    assert joined["epoch"] == epoch
    assert joined["read"] == {"bob": message["seq"]}
    other = clients(daemon.url("wss"))
    other.hello("alice")
    assert other.join("lobby")["read"] == {"bob": message["seq"]}  # alice has read nothing
