"""Bad input: error frames with stable codes, close codes for bad messages; others unaffected."""

from __future__ import annotations

import pytest
from chatd_harness import assert_contiguous


@pytest.fixture
def chatting(daemon, clients):
    """alice and bob in `lobby`; `chat()` proves that they still chat undisturbed."""
    alice, bob = clients(daemon.url("ws")), clients(daemon.url("wss"))
    alice.hello("alice")
    bob.hello("bob")
    alice.join("lobby")
    bob.join("lobby")
    alice.next_event()  # bob's presence
    said = []

    def chat():
        number = len(said)
        message, _ack = alice.say("lobby", f"still fine {number}", f"ok-{number}")
        assert bob.next_event() == message
        said.append(message)

    return alice, bob, chat, said


# (frame sent by a welcomed client that has joined `lobby`, expected code, expected ref)
AFTER_HELLO = [
    ("not json at all", "bad_json", None),
    ('{"type": "say", "room": "lobby", "text": "unterminated', "bad_json", None),
    ("[1, 2, 3]", "bad_frame", None),
    ('"just a string"', "bad_frame", None),
    ('{"id": "x-1"}', "bad_frame", "x-1"),
    ('{"type": 7, "id": "x-2"}', "bad_frame", "x-2"),
    ('{"type": "dance", "id": "x-3"}', "unknown_type", "x-3"),
    ('{"type": "hello", "name": "mallory", "id": "x-4"}', "already_welcomed", "x-4"),
    ('{"type": "say", "room": "elsewhere", "text": "hi", "id": "x-5"}', "not_joined", "x-5"),
    ('{"type": "leave", "room": "elsewhere", "id": "x-6"}', "not_joined", "x-6"),
    ('{"type": "say", "room": "lobby", "id": "x-7"}', "bad_frame", "x-7"),
    ('{"type": "say", "room": "lobby", "text": 42, "id": "x-8"}', "bad_frame", "x-8"),
    ('{"type": "say", "room": "lobby", "text": "no id"}', "bad_id", None),
    ('{"type": "say", "room": "lobby", "text": "hi", "id": "sp ace"}', "bad_id", None),
    ('{"type": "say", "room": "lobby", "text": "   ", "id": "x-9"}', "bad_text", "x-9"),
    ('{"type": "say", "room": "lobby", "text": "bell\\u0007", "id": "x-10"}', "bad_text", "x-10"),
    ('{"type": "say", "room": "lobby", "text": "\\ud800", "id": "x-11"}', "bad_text", "x-11"),
    ('{"type": "who", "room": "nowhere", "id": "x-12"}', "unknown_room", "x-12"),
    ('{"type": "history", "room": "nowhere", "id": "x-13"}', "unknown_room", "x-13"),
    ('{"type": "join", "room": "Not A Room", "id": "x-14"}', "bad_room", "x-14"),
    ('{"type": "join", "id": "x-15"}', "bad_frame", "x-15"),
    ('{"type": "join", "room": "lobby", "since": 5, "id": "x-16"}', "bad_frame", "x-16"),
    ('{"type": "history", "room": "lobby", "before": 0, "id": "x-17"}', "bad_frame", "x-17"),
    ('{"type": "history", "room": "lobby", "limit": true, "id": "x-18"}', "bad_frame", "x-18"),
    ("[" * 20_000 + "]" * 20_000, "bad_json", None),  # nests too deeply
]


def expect_error(client, code: str, ref) -> None:
    error = client.recv()
    assert set(error) == {"type", "code", "message", "ref"}, error
    assert (error["type"], error["code"], error["ref"]) == ("error", code, ref), error
    assert isinstance(error["message"], str) and error["message"], error


def test_bad_frames_get_error_frames_and_disturb_nobody(daemon, clients, chatting):
    alice, bob, chat, said = chatting
    mallory = clients(daemon.url("ws"))

    # Before hello: parse errors first, then everything but hello is refused.
    for frame, code, ref in [
        ("{not json", "bad_json", None),
        ("[]", "bad_frame", None),
        ('{"type": "dance", "id": "p-1"}', "unknown_type", "p-1"),
        ('{"type": "say", "room": "lobby", "text": "hi", "id": "p-2"}', "hello_required", "p-2"),
        ('{"type": "join", "room": "lobby", "id": "p-3"}', "hello_required", "p-3"),
        ('{"type": "who", "room": "lobby"}', "hello_required", None),
        ('{"type": "hello", "name": "-bad", "id": "p-4"}', "bad_name", "p-4"),
        ('{"type": "hello", "name": "x", "id": 5}', "bad_id", None),
        ('{"type": "hello", "name": "ALICE", "id": "p-5"}', "name_taken", "p-5"),
    ]:
        mallory.send_raw(frame)
        expect_error(mallory, code, ref)
        chat()

    mallory.hello("mallory")
    mallory.join("lobby")
    for client in (alice, bob):
        assert client.next_event()["user"] == "mallory"

    for frame, code, ref in AFTER_HELLO:
        mallory.send_raw(frame)
        expect_error(mallory, code, ref)
        chat()
        assert mallory.next_event() == said[-1]

    # Still welcomed and joined after all that: mallory can chat too.
    message, _ack = mallory.say("lobby", "I behave now", "m-1")
    assert alice.next_event() == message
    assert bob.next_event() == message

    # The transcript holds the presence events and the accepted messages, nothing else.
    transcript = daemon.transcript("lobby")
    assert_contiguous(transcript, first=1)
    messages = [event for event in transcript if event["type"] == "message"]
    assert messages == [*said, message]
    presences = [(e["user"], e["event"]) for e in transcript if e["type"] == "presence"]
    assert presences == [("alice", "join"), ("bob", "join"), ("mallory", "join")]


def test_text_too_long(make_daemon, clients):
    daemon = make_daemon(limits={"max_text_chars": 10})
    alice = clients(daemon.url("ws"))
    assert alice.hello("alice")["max_text_chars"] == 10
    alice.join("lobby")
    alice.send({"type": "say", "room": "lobby", "text": "x" * 11, "id": "long"})
    expect_error(alice, "text_too_long", "long")
    # Characters, not bytes, and counted after NFC normalisation.
    alice.say("lobby", "é" * 10, "ten")
    alice.send({"type": "say", "room": "lobby", "text": "e\u0301" * 10, "id": "nfc"})
    assert alice.recv()["text"] == "é" * 10


@pytest.fixture
def small_daemon(make_daemon):
    return make_daemon(limits={"max_message_bytes": 2048})


@pytest.mark.parametrize(
    ("what", "send", "code"),
    [
        (
            "too big",
            lambda ws: ws.send('{"type": "who", "room": "lobby", "pad": "' + "x" * 3000 + '"}'),
            1009,
        ),
        ("too big in fragments", lambda ws: ws.send(["x" * 1500, "x" * 1500]), 1009),
        ("binary", lambda ws: ws.send(b'{"type": "who", "room": "lobby"}'), 1003),
        ("not UTF-8", lambda ws: ws.send(b'{"type": "who", "room": "\xff"}', text=True), 1007),
    ],
)
def test_bad_messages_close_the_connection(small_daemon, clients, what, send, code):
    daemon = small_daemon
    alice, bob, carol = (clients(daemon.url(kind)) for kind in ("ws", "wss", "ws"))
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        client.hello(name)
        client.join("lobby")
    alice.recv_until(lambda frame: frame.get("user") == "carol")
    bob.recv_until(lambda frame: frame.get("user") == "carol")

    # Just under the limit is fine.
    message, _ack = alice.say("lobby", "y" * 1900, "a-1")
    assert bob.next_event() == message

    send(carol.ws)
    assert carol.expect_closed()[0] == code, what
    leave = alice.next_event()
    assert (leave["type"], leave["user"], leave["event"]) == ("presence", "carol", "leave")
    assert bob.next_event() == leave

    message, _ack = bob.say("lobby", "carol is gone, we are fine", "b-1")
    assert alice.next_event() == message
    assert message["seq"] == leave["seq"] + 1
