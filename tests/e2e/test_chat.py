"""Chatting through a real daemon, on ws and wss: presence, messages, acks, who, leave, close."""

from __future__ import annotations

import json
import re

import pytest
from chatd_harness import assert_contiguous, assert_message, assert_presence, wait_for


@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_two_users_chat(daemon, clients, kind):
    url = daemon.url(kind)
    alice, bob = clients(url), clients(url)
    welcomes = [alice.hello("alice"), bob.hello("bob")]
    for welcome, name in zip(welcomes, ("alice", "bob"), strict=True):
        session = welcome["session"]
        assert welcome == {
            "type": "welcome",
            "user": name,
            "name": name,
            "roles": [],
            "session": session,
            "resume": welcome["resume"],
            "resumed": False,
            "secret": welcome["secret"],  # open mode: the user's secret for further sessions
            "max_text_chars": 4000,
        }
        assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", session), welcome
        assert re.fullmatch(re.escape(session) + r"\.[A-Za-z0-9_-]{16,}", welcome["resume"])
        assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", welcome["secret"]), welcome
    secrets = {w[key] for w in welcomes for key in ("session", "resume", "secret")}
    assert len(secrets) == 6, welcomes

    joined = alice.join("lobby")
    epoch = joined["epoch"]
    assert re.fullmatch(r"[0-9a-f]{1,32}", epoch), epoch
    assert joined == {
        "type": "joined",
        "room": "lobby",
        "epoch": epoch,
        "seq": 0,
        "members": ["alice"],
        "names": {"alice": "alice"},
        "recovered": False,
        "ref": None,
        "read": {},
        "history": [],
    }
    assert_presence(
        alice.received[-1], room="lobby", epoch=epoch, seq=1, user="alice", event="join"
    )

    bob.send({"type": "join", "room": "lobby", "id": "j-1"})
    joined = bob.recv()
    assert joined == {
        "type": "joined",
        "room": "lobby",
        "epoch": epoch,
        "seq": 1,
        "members": ["alice", "bob"],
        "names": {"alice": "alice", "bob": "bob"},
        "recovered": False,
        "ref": "j-1",
        "read": {},
        "history": [alice.received[-1]],
    }
    # Both members get bob's presence event, the same bytes.
    for client in (bob, alice):
        assert_presence(
            client.next_event(), room="lobby", epoch=epoch, seq=2, user="bob", event="join"
        )
    assert alice.raw[-1] == bob.raw[-1]

    # alice says something: both get the same message frame, and then alice gets the ack.
    alice.send({"type": "say", "room": "lobby", "text": "hello, bob", "id": "a-1"})
    message = alice.recv()
    assert_message(
        message, room="lobby", epoch=epoch, seq=3, sender="alice", id="a-1", text="hello, bob"
    )
    assert alice.recv() == {"type": "ack", "id": "a-1", "seq": 3}
    assert bob.next_event() == message
    assert bob.raw[-1] == alice.raw[-2]

    # And bob answers.
    reply, _ack = bob.say("lobby", "hi alice", "b-1")
    assert_message(reply, room="lobby", epoch=epoch, seq=4, sender="bob", id="b-1", text="hi alice")
    assert alice.next_event() == reply

    alice.send({"type": "who", "room": "lobby", "id": "w-1"})
    assert alice.recv() == {
        "type": "members",
        "room": "lobby",
        "members": ["alice", "bob"],
        "names": {"alice": "alice", "bob": "bob"},
        "ref": "w-1",
    }

    # bob leaves: he gets `left`, alice gets the presence event; bob gets no event of his own.
    bob.send({"type": "leave", "room": "lobby", "id": "l-1"})
    assert bob.recv() == {"type": "left", "room": "lobby", "ref": "l-1"}
    assert_presence(alice.next_event(), room="lobby", epoch=epoch, seq=5, user="bob", event="leave")
    bob.send({"type": "who", "room": "lobby"})
    assert bob.recv() == {
        "type": "members",
        "room": "lobby",
        "members": ["alice"],
        "names": {"alice": "alice"},
        "ref": None,
    }
    # Not a member any more: saying is refused.
    bob.send({"type": "say", "room": "lobby", "text": "still here?", "id": "b-2"})
    error = bob.recv()
    assert error["type"] == "error" and error["code"] == "not_joined" and error["ref"] == "b-2"

    # bob comes back, then drops the connection: alice sees him join and leave.
    bob.join("lobby")
    assert_presence(alice.next_event(), room="lobby", epoch=epoch, seq=6, user="bob", event="join")
    bob.close()
    assert_presence(alice.next_event(), room="lobby", epoch=epoch, seq=7, user="bob", event="leave")
    alice.send({"type": "who", "room": "lobby"})
    assert alice.recv() == {
        "type": "members",
        "room": "lobby",
        "members": ["alice"],
        "names": {"alice": "alice"},
        "ref": None,
    }
    events = [frame for frame in alice.received if frame["type"] in ("message", "presence")]
    assert_contiguous(events, first=1)


def test_ws_and_wss_clients_share_rooms(daemon, clients):
    plain, secure = clients(daemon.url("ws")), clients(daemon.url("wss"))
    plain.hello("plain")
    secure.hello("secure")
    epoch = plain.join("mixed")["epoch"]
    assert secure.join("mixed")["epoch"] == epoch
    plain.next_event()  # secure's presence
    message, _ack = secure.say("mixed", "over TLS", "s-1")
    assert plain.next_event() == message
    message, _ack = plain.say("mixed", "in the clear", "p-1")
    assert secure.next_event() == message
    assert message["seq"] == 4


def test_names_are_unique_ignoring_case(daemon, clients):
    first, second = clients(daemon.url("ws")), clients(daemon.url("wss"))
    first.hello("Carol")
    second.send({"type": "hello", "name": "cAROL", "id": "h-2"})
    error = second.recv()
    assert (error["type"], error["code"], error["ref"]) == ("error", "name_taken", "h-2")
    # The name is free again once its holder disconnects.
    first.close()
    wait_for(lambda: _users(daemon) == 0, 5, "Carol's disconnection")
    assert second.hello("cAROL")["user"] == "cAROL"


def _users(daemon) -> int:
    return json.loads(daemon.get("ws", "/healthz")[2])["users"]


def test_transcript_is_exactly_the_delivered_events(daemon, clients):
    url = daemon.url("ws")
    observer, alice, bob = clients(url), clients(url), clients(url)
    observer.hello("observer")
    alice.hello("alice")
    bob.hello("bob")
    joined = observer.join("notes")
    assert (joined["seq"], joined["history"]) == (0, [])

    alice.join("notes")
    bob.join("notes")
    texts = [
        'quotes " and \\ backslashes',
        "two\nlines\tand a tab",
        "grüße 👋 e\u0301",  # NFC turns e + combining acute into é
    ]
    alice.say("notes", texts[0], "m-0")
    bob.say("notes", texts[1], "m-1")
    alice.send({"type": "say", "room": "notes", "text": texts[2], "id": "m-2"})
    alice.recv_until(lambda frame: frame["type"] == "ack")
    bob.send({"type": "leave", "room": "notes"})
    bob.recv_until(lambda frame: frame["type"] == "left")
    alice.close()

    # observer's own join, alice and bob joining, 3 messages, bob leaving, alice disconnecting.
    events = [observer.received[-1]] + [observer.next_event() for _ in range(7)]
    raw_events = observer.raw[-8:]
    assert [event["type"] for event in events] == ["presence"] * 3 + ["message"] * 3 + [
        "presence"
    ] * 2
    assert [event["text"] for event in events[3:6]] == [
        'quotes " and \\ backslashes',
        "two\nlines\tand a tab",
        "grüße 👋 é",
    ]
    assert events[3:6][2]["text"] == "grüße 👋 \u00e9"
    assert_contiguous(events, first=1)

    # Every event is flushed to the transcript before it is delivered.
    lines = daemon.transcript_lines("notes")
    assert lines == raw_events
    assert [json.loads(line) for line in lines] == events
    timestamps = [event["ts"] for event in events]
    assert timestamps == sorted(timestamps)


def test_retry_with_the_same_id_is_not_posted_twice(daemon, clients):
    url = daemon.url("ws")
    alice, bob = clients(url), clients(url)
    alice.hello("alice")
    bob.hello("bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.next_event()  # bob's presence

    # Sent twice back to back, before the first ack.
    say = {"type": "say", "room": "lobby", "text": "once", "id": "dup-1"}
    alice.send(say)
    alice.send(say)
    message = alice.expect(type="message", id="dup-1", seq=3)
    assert alice.recv() == {"type": "ack", "id": "dup-1", "seq": 3}
    assert alice.recv() == {"type": "ack", "id": "dup-1", "seq": 3}
    # ... and once more after the ack.
    alice.send(say)
    assert alice.recv() == {"type": "ack", "id": "dup-1", "seq": 3}
    # A retry is recognised by sender and id, whatever its text.
    alice.send({**say, "text": "a different text"})
    assert alice.recv() == {"type": "ack", "id": "dup-1", "seq": 3}

    # bob saw it once: the next event he gets is the next message, at seq 4.
    assert bob.next_event() == message
    marker, _ack = alice.say("lobby", "marker", "m-1")
    assert marker["seq"] == 4
    assert bob.next_event() == marker

    # The same id from another sender is another message.
    theirs, _ack = bob.say("lobby", "mine", "dup-1")
    assert (theirs["seq"], theirs["from"]) == (5, "bob")
    assert alice.next_event() == theirs

    ids = [(event.get("from"), event.get("id")) for event in daemon.transcript("lobby")]
    assert ids.count(("alice", "dup-1")) == 1
    assert ids.count(("bob", "dup-1")) == 1


@pytest.mark.parametrize("kind", ["ws", "wss"])
def test_healthz(daemon, clients, kind):
    status, content_type, body = daemon.get(kind, "/healthz")
    assert (status, content_type) == (200, "application/json")
    assert _documented(json.loads(body)) == {"status": "ok", "rooms": 0, "users": 0}

    alice = clients(daemon.url(kind))
    alice.hello("alice")
    alice.join("lobby")
    status, _content_type, body = daemon.get(kind, "/healthz")
    assert status == 200
    assert _documented(json.loads(body)) == {"status": "ok", "rooms": 1, "users": 1}


def _documented(health: dict) -> dict:
    """The fields docs/protocol.md promises (the daemon may add more)."""
    return {key: health.get(key) for key in ("status", "rooms", "users")}
