"""Typing indicators (chatd/typing_indicators.py): fanned out to the other members, renewed
without a new frame, ended by time, by a message, by leaving and by the last session ending;
never recorded; a budget of their own."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chatd import errors, wire
from chatd.auth import OpenAuthenticator
from chatd.config import RoomPolicy, load_config
from chatd.errors import ChatError
from chatd.outgoing import Deflater
from chatd.ratelimit import FrameBudget

TIMEOUT = 5.0  # [rooms] typing_timeout's default


def typing(server, session, is_typing: bool = True, room: str = "lobby") -> None:
    server.handle(session, wire.Typing(room=room, typing=is_typing, ref=None))


def say(server, session, text: str, room: str = "lobby") -> None:
    server.handle(session, wire.Say(room=room, text=text, id=f"id-{text}"))


def indicators(connection) -> list[tuple[str, bool]]:
    return [(frame["user"], frame["typing"]) for frame in connection.of_type("typing")]


def expiry_timers(clock) -> list:
    return [call for call in clock.getDelayedCalls() if call.func.__name__ == "_expired"]


def welcome(server, connection, name: str, room: str = "lobby", secret: str | None = None):
    """A session of `name` (a further one with the user's `secret`), joined to `room`; and
    the user's secret."""
    hello = wire.Hello(name=name, ref=None, secret=secret)
    session, fields = server.hello(connection, OpenAuthenticator().identify(hello), hello)
    server.join(session, wire.Join(room=room, since=None, ref=None))
    return session, fields["secret"]


@pytest.fixture
def lobby(make_chat, make_connection, clock):
    """alice, bob and carol in the lobby, their joins committed: the server, and each
    one's (session, connection, user secret) by name."""
    server = make_chat()
    people = {}
    for name in ("alice", "bob", "carol"):
        connection = make_connection()
        session, secret = welcome(server, connection, name)
        people[name] = (session, connection, secret)
    clock.advance(0)
    return server, people


def test_typing_reaches_every_other_member_once_and_not_the_typers_sessions(
    lobby, clock, make_connection, transcript_dir, prepared_frames
):
    server, people = lobby
    (alice, alice_connection, secret), (_, bob, _), (_, carol, _) = people.values()
    second_connection = make_connection()
    welcome(server, second_connection, "alice", secret=secret)
    clock.advance(0)
    transcript = (transcript_dir / "lobby.jsonl").read_bytes()

    typing(server, alice)
    frame = {"type": "typing", "room": "lobby", "user": "alice", "name": "alice", "typing": True}
    assert bob.frames[-1] == frame and carol.frames[-1] == frame
    assert indicators(alice_connection) == [] and indicators(second_connection) == []
    # One frame for the room, the same object to each receiver; no seq, no transcript line.
    assert bob.prepared[-1] is carol.prepared[-1] is prepared_frames[-1]
    clock.advance(0)
    assert (transcript_dir / "lobby.jsonl").read_bytes() == transcript


def test_renewals_restart_the_timer_without_telling_anyone_again(lobby, clock):
    server, people = lobby
    (alice, _, _), (_, bob, _), _ = people.values()
    typing(server, alice)
    clock.advance(3.0)
    typing(server, alice)
    clock.advance(3.0)
    typing(server, alice)
    clock.advance(TIMEOUT - 0.1)
    assert indicators(bob) == [("alice", True)]
    clock.advance(0.1)
    assert indicators(bob) == [("alice", True), ("alice", False)]
    assert expiry_timers(clock) == []


def test_an_indicator_ends_by_itself_after_the_timeout(lobby, clock):
    server, people = lobby
    (alice, _, _), (bob, bob_connection, _), _ = people.values()
    typing(server, alice)
    typing(server, bob)
    assert len(expiry_timers(clock)) == 2
    clock.advance(TIMEOUT)
    assert indicators(people["carol"][1]) == [
        ("alice", True),
        ("bob", True),
        ("alice", False),
        ("bob", False),
    ]
    assert indicators(bob_connection) == [("alice", True), ("alice", False)]
    assert expiry_timers(clock) == []


def test_typing_false_ends_it_and_without_an_indicator_sends_nothing(lobby, clock):
    server, people = lobby
    (alice, _, _), (_, bob, _), _ = people.values()
    typing(server, alice, False)
    assert indicators(bob) == []
    typing(server, alice)
    typing(server, alice, False)
    typing(server, alice, False)
    assert indicators(bob) == [("alice", True), ("alice", False)]
    assert expiry_timers(clock) == []


def test_a_message_ends_its_senders_indicator_before_it_is_delivered(lobby, clock):
    server, people = lobby
    (alice, alice_connection, _), (_, bob, _), _ = people.values()
    typing(server, alice)
    before = len(bob.frames)
    say(server, alice, "hello")
    # At once, while the message waits for its transcript write at the end of the turn.
    assert [frame["type"] for frame in bob.frames[before:]] == ["typing"]
    clock.advance(0)
    assert [(frame["type"], frame.get("typing")) for frame in bob.frames[before:]] == [
        ("typing", False),
        ("message", None),
    ]
    assert expiry_timers(clock) == []
    assert indicators(alice_connection) == []


def test_a_refused_message_leaves_the_indicator(make_chat, enter, clock):
    server = make_chat(rooms={"declared": {"lobby": RoomPolicy(post=("staff",))}})
    alice, _, _ = enter(server, "alice")
    _, bob, _ = enter(server, "bob")
    clock.advance(0)
    with pytest.raises(ChatError) as refused:
        typing(server, alice)
    assert refused.value.code == errors.FORBIDDEN  # who may not post may not type either
    assert indicators(bob) == []


def test_leaving_ends_the_indicator_after_the_leave(lobby, clock):
    server, people = lobby
    (alice, _, _), (_, bob, _), _ = people.values()
    typing(server, alice)
    server.handle(alice, wire.Leave(room="lobby", ref=None))
    clock.advance(0)
    assert [
        (frame["type"], frame.get("event"), frame.get("typing")) for frame in bob.frames[-2:]
    ] == [("presence", "leave", None), ("typing", None, False)]
    assert expiry_timers(clock) == []


def test_only_the_users_last_session_leaving_ends_it(lobby, clock, make_connection):
    server, people = lobby
    (alice, _, secret), (_, bob, _), _ = people.values()
    other, _ = welcome(server, make_connection(), "alice", secret=secret)
    typing(server, other)
    server.disconnect(alice)
    clock.advance(0)
    assert indicators(bob) == [("alice", True)]
    server.disconnect(other)
    clock.advance(0)
    assert indicators(bob) == [("alice", True), ("alice", False)]
    assert expiry_timers(clock) == []


def test_typing_in_a_room_not_joined_is_refused_like_say(lobby):
    server, people = lobby
    alice = people["alice"][0]
    for frame in (
        wire.Typing(room="elsewhere", typing=True, ref="t1"),
        wire.Say(room="elsewhere", text="hi", id="s1"),
    ):
        with pytest.raises(ChatError) as refused:
            server.handle(alice, frame)
        assert refused.value.code == errors.NOT_JOINED


def test_shutdown_leaves_no_timer(lobby, clock):
    server, people = lobby
    typing(server, people["alice"][0])
    server.shutdown()
    assert expiry_timers(clock) == []


# -- the wire and the budget ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "typing", "room": "lobby"}, errors.BAD_FRAME),
        ({"type": "typing", "room": "lobby", "typing": 1}, errors.BAD_FRAME),
        ({"type": "typing", "room": "Lobby!", "typing": True}, errors.BAD_ROOM),
    ],
)
def test_bad_typing_frames(frame, code):
    with pytest.raises(ChatError) as refused:
        wire.FrameParser(max_text_chars=100).parse(json.dumps(frame).encode())
    assert refused.value.code == code


def test_typing_has_a_budget_of_its_own_that_never_strikes():
    limits = replace(load_config(None).limits, typing_per_second=2.0, typing_burst=3)
    budget = FrameBudget(limits, now=0.0)
    assert [budget.take("typing", 0.0) for _ in range(4)] == [True, True, True, False]
    assert budget.take("typing", 0.5) is True  # 2/s
    assert budget.strike("typing") is False
    assert budget.take("say", 0.5) and budget.take("who", 0.5)


def test_a_typing_flood_is_dropped_quietly_and_spares_the_message_budget(server):
    alice, bob = server.joined("alice"), server.joined("bob")
    limits = server.limits
    flood = 10 * (limits.message_burst + limits.cheap_burst + limits.flood_close_after)
    for _ in range(flood):
        alice.send_json({"type": "typing", "room": "lobby", "typing": True})
    server.flush()
    assert alice.close_code is None
    assert alice.of_type("error") == []  # dropped without a word
    assert [frame["typing"] for frame in bob.of_type("typing")] == [True]
    # The whole burst of messages is still there (hello and join took one token each).
    for number in range(limits.message_burst - 2):
        alice.send_json({"type": "say", "room": "lobby", "text": "hi", "id": f"s{number}"})
    server.flush()
    assert len(alice.of_type("ack")) == limits.message_burst - 2
    assert alice.of_type("error") == [] and alice.close_code is None
    assert bob.of_type("typing")[-1]["typing"] is False


def test_typing_frames_are_compressed_like_events(make_server):
    server = make_server(deflater=Deflater())
    alice, bob = server.joined("alice"), server.joined("bob")
    assert bob.websocket_extensions_in_use  # permessage-deflate negotiated
    alice.send_json({"type": "typing", "room": "lobby", "typing": True})
    server.flush()
    assert bob.of_type("typing") == [
        {"type": "typing", "room": "lobby", "user": "alice", "name": "alice", "typing": True}
    ]
