"""Durable rooms: restarts keep epoch, seq and history; clients resume with `since`."""

from __future__ import annotations

import json

from chatd_harness import assert_contiguous, assert_message, assert_presence


def _health(daemon) -> dict:
    return json.loads(daemon.get("ws", "/healthz")[2])


def events_of(client) -> list[dict]:
    return [frame for frame in client.received if frame["type"] in ("message", "presence")]


def test_restart_keeps_seq_and_history(daemon, clients):
    alice, bob = clients(daemon.url("ws")), clients(daemon.url("wss"))
    alice.hello("alice")
    bob.hello("bob")
    epoch = alice.join("lobby")["epoch"]
    alice.say("lobby", "before the restart", "a-1")
    alice.say("lobby", "still before", "a-2")
    bob.join("lobby")
    alice.next_event()  # bob's presence, seq 4

    # SIGTERM with both connected: each is told to go away (1001), their leaves are recorded,
    # and the daemon exits 0 (Daemon.stop checks).
    daemon.stop()
    assert alice.expect_closed()[0] == 1001
    assert bob.expect_closed()[0] == 1001
    before = daemon.transcript("lobby")
    assert before[:4] == events_of(alice)
    assert_contiguous(before, first=1)
    assert len(before) == 6
    assert sorted((event["user"], event["event"]) for event in before[4:]) == [
        ("alice", "leave"),
        ("bob", "leave"),
    ]

    daemon.restart()
    # Rooms load on demand: none is in memory until used. What the restart must keep (epoch,
    # seq, history) is checked on the wire below.
    assert _health(daemon)["rooms"] == 0
    carol = clients(daemon.url("wss"))
    carol.hello("carol")
    joined = carol.join("lobby")
    assert joined == {
        "type": "joined",
        "room": "lobby",
        "epoch": epoch,
        "seq": 6,
        "members": ["carol"],
        "names": {"carol": "carol"},
        "recovered": False,
        "ref": None,
        "read": {},
        "history": before,
    }
    assert_presence(
        carol.received[-1], room="lobby", epoch=epoch, seq=7, user="carol", event="join"
    )
    assert _health(daemon)["rooms"] == 1
    message, _ack = carol.say("lobby", "after the restart", "c-1")
    assert_message(
        message,
        room="lobby",
        epoch=epoch,
        seq=8,
        sender="carol",
        id="c-1",
        text="after the restart",
    )

    carol.send({"type": "history", "room": "lobby", "id": "h-1"})
    assert carol.recv() == {
        "type": "history",
        "room": "lobby",
        "epoch": epoch,
        "more": False,
        "ref": "h-1",
        "events": [*before, *events_of(carol)],
    }
    assert daemon.transcript("lobby") == [*before, *events_of(carol)]


def test_resume_gets_exactly_the_missed_events(daemon, clients):
    bob = clients(daemon.url("ws"))
    bob.hello("bob")
    bob.join("lobby")
    alice = clients(daemon.url("wss"))
    alice.hello("alice")
    epoch = alice.join("lobby")["epoch"]
    seen = alice.received[-1]["seq"]  # alice's own presence, the last event she saw
    assert bob.next_event()["seq"] == seen
    alice.close()

    assert_presence(
        bob.next_event(), room="lobby", epoch=epoch, seq=seen + 1, user="alice", event="leave"
    )
    for number in range(5):
        bob.say("lobby", f"missed {number}", f"b-{number}")
    missed = [event for event in events_of(bob) if event["seq"] > seen]
    assert len(missed) == 6  # alice's leave and the 5 messages

    alice = clients(daemon.url("wss"))
    alice.hello("alice")
    joined = alice.join("lobby", since={"epoch": epoch, "seq": seen})
    assert joined == {
        "type": "joined",
        "room": "lobby",
        "epoch": epoch,
        "seq": seen + 6,
        "members": ["bob", "alice"],
        "names": {"bob": "bob", "alice": "alice"},
        "recovered": True,
        "ref": None,
        "read": {},
        "history": missed,
    }
    assert_contiguous(missed, first=seen + 1)
    # Live events continue without a gap: her presence (read by join()), then bob's message.
    assert bob.next_event() == alice.received[-1]
    message, _ack = bob.say("lobby", "live again", "b-live")
    assert alice.next_event() == message
    assert message["seq"] == seen + 8

    # Re-joining while joined resumes too: nothing missed, and no second presence event.
    alice.send({"type": "join", "room": "lobby", "since": {"epoch": epoch, "seq": seen + 8}})
    joined = alice.recv()
    assert (joined["type"], joined["recovered"], joined["seq"], joined["history"]) == (
        "joined",
        True,
        seen + 8,
        [],
    )
    message, _ack = bob.say("lobby", "next", "b-next")
    assert alice.next_event() == message
    assert message["seq"] == seen + 9


def test_resume_that_cannot_be_served_gets_the_latest_events(make_daemon, clients):
    daemon = make_daemon(history={"memory_events": 6, "replay_events": 3})
    bob = clients(daemon.url("ws"))
    bob.hello("bob")
    epoch = bob.join("lobby")["epoch"]
    for number in range(9):
        bob.say("lobby", f"message {number}", f"b-{number}")
    events = events_of(bob)
    assert_contiguous(events, first=1)
    latest = events[-3:]

    alice = clients(daemon.url("ws"))
    alice.hello("alice")

    def join(since):
        alice.send({"type": "join", "room": "lobby", "since": since})
        return alice.recv()

    expected = {
        "type": "joined",
        "room": "lobby",
        "epoch": epoch,
        "seq": 10,
        "members": ["bob", "alice"],
        "names": {"bob": "bob", "alice": "alice"},
        "recovered": False,
        "ref": None,
        "read": {},
        "history": latest,
    }
    # Another epoch: its seq numbers mean nothing here.
    assert join({"epoch": "0123456789abcdef", "seq": 8}) == expected
    alice.next_event()  # alice's presence, seq 11
    expected.update(seq=11, history=[*events_of(bob)[-2:], alice.received[-1]])
    # Events that are no longer in memory (6 kept: seq 6-11).
    assert join({"epoch": epoch, "seq": 3}) == expected
    # A seq from the future.
    assert join({"epoch": epoch, "seq": 12}) == expected
    # The oldest event in memory is still resumable.
    resumed = join({"epoch": epoch, "seq": 5})
    assert (resumed["recovered"], [event["seq"] for event in resumed["history"]]) == (
        True,
        [6, 7, 8, 9, 10, 11],
    )
    # A malformed since is a bad frame.
    alice.send(
        {"type": "join", "room": "lobby", "since": {"epoch": "NOT-HEX", "seq": 1}, "id": "j"}
    )
    error = alice.recv()
    assert (error["type"], error["code"], error["ref"]) == ("error", "bad_frame", "j")


def test_resume_after_a_restart(daemon, clients):
    bob = clients(daemon.url("ws"))
    bob.hello("bob")
    bob.join("lobby")
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    epoch = alice.join("lobby")["epoch"]
    seen = alice.received[-1]["seq"]
    alice.close()
    for number in range(3):
        bob.say("lobby", f"missed {number}", f"b-{number}")
    bob.close()

    daemon.stop()
    missed = [event for event in daemon.transcript("lobby") if event["seq"] > seen]
    # alice's leave, 3 messages, bob's leave.
    assert [event["type"] for event in missed] == [
        "presence",
        "message",
        "message",
        "message",
        "presence",
    ]
    daemon.restart()

    alice = clients(daemon.url("wss"))
    alice.hello("alice")
    joined = alice.join("lobby", since={"epoch": epoch, "seq": seen})
    assert (joined["epoch"], joined["seq"], joined["recovered"]) == (epoch, seen + 5, True)
    assert joined["history"] == missed
    assert_contiguous(missed, first=seen + 1)


def test_history_pages_back_into_the_transcript(make_daemon, clients):
    daemon = make_daemon(history={"memory_events": 5, "replay_events": 3, "page_limit": 4})
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    epoch = alice.join("lobby")["epoch"]
    for number in range(12):
        alice.say("lobby", f"message {number}", f"a-{number}")
    events = events_of(alice)
    assert_contiguous(events, first=1)
    assert len(events) == 13

    def history(**fields) -> dict:
        alice.send({"type": "history", "room": "lobby", **fields})
        reply = alice.recv()
        assert set(reply) == {"type", "room", "epoch", "more", "ref", "events"}, reply
        assert (reply["type"], reply["room"], reply["epoch"]) == ("history", "lobby", epoch)
        return reply

    def page(**fields) -> tuple[list[int], bool]:
        reply = history(**fields)
        return [event["seq"] for event in reply["events"]], reply["more"]

    assert history(id="h-1")["events"] == events[-3:]  # replay_events by default
    assert history(id="h-1")["ref"] == "h-1"
    assert page(limit=100) == ([10, 11, 12, 13], True)  # cut to page_limit
    assert page(before=10, limit=4) == ([6, 7, 8, 9], True)  # partly in memory
    assert page(before=6, limit=4) == ([2, 3, 4, 5], True)  # only in the transcript
    assert page(before=3, limit=4) == ([1, 2], False)
    assert page(before=1) == ([], False)
    assert history(before=6, limit=4)["events"] == events[1:5]

    # The same pages after a restart, when memory holds only the latest events.
    alice.close()
    daemon.restart()
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    alice.send({"type": "history", "room": "lobby", "before": 6, "limit": 4})
    assert alice.recv()["events"] == events[1:5]
    alice.send({"type": "history", "room": "nowhere", "id": "h-2"})
    error = alice.recv()
    assert (error["type"], error["code"], error["ref"]) == ("error", "unknown_room", "h-2")


def test_rotated_transcripts_keep_history_and_resume(make_daemon, clients):
    daemon = make_daemon(
        transcripts={"rotate_size": "1K"}, history={"memory_events": 4, "replay_events": 4}
    )
    alice = clients(daemon.url("ws"))
    alice.hello("alice")
    epoch = alice.join("lobby")["epoch"]
    for number in range(20):
        alice.say("lobby", f"message {number:02} " + "x" * 100, f"a-{number}")
    events = events_of(alice)
    alice.close()
    daemon.stop()

    files = daemon.transcript_files("lobby")
    assert len(files) > 2, files
    stored = []
    for path in files:
        assert path.stat().st_size <= 1024, path
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert_contiguous(lines)  # a file never holds a gap
        stored.extend(lines)
    stored.sort(key=lambda event: event["seq"])
    assert stored[:-1] == events  # and then alice's leave
    assert_contiguous(stored, first=1)

    daemon.restart()
    bob = clients(daemon.url("ws"))
    bob.hello("bob")
    joined = bob.join("lobby", since={"epoch": epoch, "seq": 18})
    assert (joined["epoch"], joined["seq"], joined["recovered"]) == (epoch, 22, True)
    assert joined["history"] == stored[18:]
    presence = bob.received[-1]
    bob.send({"type": "history", "room": "lobby", "limit": 200})
    assert bob.recv()["events"] == [*stored, presence]
