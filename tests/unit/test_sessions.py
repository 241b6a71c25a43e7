"""A user is many sessions: several connections of one user, takeover by resume, presence
counted per user, events to every session and acks to the sender's only.

Driven through the real Server (`make_chat`); connections are `RecordingConnection`s.
"""

import json
from dataclasses import replace

import pytest

from chatd import errors, wire
from chatd.auth import Identity
from chatd.errors import ChatError


def open_identity(name: str) -> Identity:
    return Identity(name, name, frozenset())


def welcome(server, connection, name: str, identity: Identity | None = None, **fields):
    """(session, welcome fields) of a hello as `name` (open mode unless `identity`)."""
    return server.hello(
        connection, identity or open_identity(name), wire.Hello(name=name, ref=None, **fields)
    )


def refusal_code(call, *args, **kwargs) -> str:
    with pytest.raises(ChatError) as caught:
        call(*args, **kwargs)
    return caught.value.code


def join(server, session, room: str = "lobby", ref: str | None = None) -> dict:
    return json.loads(server.join(session, wire.Join(room, None, ref)))


def say(server, session, text: str, client_id: str, room: str = "lobby") -> None:
    server.say(session, wire.Say(room=room, text=text, id=client_id))


def presence(connection) -> list[tuple[str, str]]:
    return [(frame["user"], frame["event"]) for frame in connection.of_type("presence")]


def texts(connection) -> list[str]:
    return [frame["text"] for frame in connection.of_type("message")]


# -- several sessions of one user ----------------------------------------------------------------


def test_open_mode_a_second_connection_with_the_user_secret_is_another_session(
    make_chat, make_connection
):
    server = make_chat()
    first, hello1 = welcome(server, make_connection(), "alice")
    second, hello2 = welcome(server, make_connection(), "alice", secret=hello1["secret"])
    assert (first.user, second.user) == ("alice", "alice")
    assert first.id != second.id and first.resume_secret != second.resume_secret
    assert hello2["secret"] == hello1["secret"]  # the user's, shared by its sessions
    assert (hello2["session"], hello2["resumed"]) == (second.id, False)
    assert (server.user_count, server.sessions.session_count) == (1, 2)
    assert server.sessions.of_user("ALICE") == [first, second]


def test_open_mode_another_spelling_of_the_name_joins_the_first_sessions_user(
    make_chat, make_connection
):
    server = make_chat()
    _first, hello1 = welcome(server, make_connection(), "Alice")
    second, _ = welcome(server, make_connection(), "aLICE", secret=hello1["secret"])
    assert second.user == "Alice"


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", "x" * 24])
def test_open_mode_without_the_right_secret_the_name_is_taken(make_chat, make_connection, secret):
    server = make_chat()
    first, _ = welcome(server, make_connection(), "alice")
    connection = make_connection()
    code = refusal_code(welcome, server, connection, "ALICE", secret=secret)
    assert code == errors.NAME_TAKEN
    assert server.sessions.of_user("alice") == [first]
    assert connection.frames == [] and connection.closed is None


def test_open_mode_another_users_secret_does_not_open_a_session(make_chat, make_connection):
    server = make_chat()
    welcome(server, make_connection(), "alice")
    _bob, bob_hello = welcome(server, make_connection(), "bob")
    code = refusal_code(welcome, server, make_connection(), "alice", secret=bob_hello["secret"])
    assert code == errors.NAME_TAKEN


def test_open_mode_the_user_secret_changes_once_the_user_has_no_session(make_chat, make_connection):
    server = make_chat()
    first, hello1 = welcome(server, make_connection(), "alice")
    server.disconnect(first)
    _again, hello2 = welcome(server, make_connection(), "alice")
    assert hello2["secret"] != hello1["secret"]
    code = refusal_code(welcome, server, make_connection(), "alice", secret=hello1["secret"])
    assert code == errors.NAME_TAKEN


def test_token_mode_every_valid_token_of_a_sub_is_another_session(
    make_chat, make_connection, tokens
):
    server = make_chat(auth=tokens.section)
    laptop = tokens.identity("agent7", name="Agent Seven", roles=["agent"])
    phone = tokens.identity("agent7", name="Agent Seven", roles=["agent"])
    first, hello1 = welcome(server, make_connection(), None, identity=laptop)
    second, hello2 = welcome(server, make_connection(), None, identity=phone)
    assert (first.user, second.user) == ("agent7", "agent7")
    assert first.id != second.id
    assert "secret" not in hello1 and "secret" not in hello2  # tokens prove who it is
    assert (server.user_count, server.sessions.session_count) == (1, 2)


def test_token_mode_subs_are_compared_exactly(make_chat, make_connection, tokens):
    server = make_chat(auth=tokens.section)
    upper, _ = welcome(server, make_connection(), None, identity=tokens.identity("Agent7"))
    lower, _ = welcome(server, make_connection(), None, identity=tokens.identity("agent7"))
    assert (upper.user, lower.user, server.user_count) == ("Agent7", "agent7", 2)


# -- the session cap ---------------------------------------------------------------------------


def test_over_the_session_cap_a_new_connection_is_refused_and_none_is_harmed(
    make_chat, make_connection, clock
):
    server = make_chat(auth={"max_sessions_per_user": 3})
    first, hello1 = welcome(server, first_connection := make_connection(), "alice")
    secret = hello1["secret"]
    others = [welcome(server, make_connection(), "alice", secret=secret)[0] for _ in range(2)]
    join(server, first)
    clock.advance(0)
    extra = make_connection()
    code = refusal_code(welcome, server, extra, "alice", secret=secret)
    assert code == errors.TOO_MANY_SESSIONS
    assert server.sessions.of_user("alice") == [first, *others]
    assert (extra.frames, extra.closed, extra.was_replaced) == ([], None, False)
    for session in [first, *others]:
        assert (session.connection.closed, session.connection.was_replaced) == (None, False)
    say(server, first, "still here", "c1")
    clock.advance(0)
    assert texts(first_connection) == ["still here"]
    # Closing one makes room for another.
    server.disconnect(others[0])
    assert welcome(server, make_connection(), "alice", secret=secret)[0].user == "alice"


def test_the_session_cap_is_per_user(make_chat, make_connection):
    server = make_chat(auth={"max_sessions_per_user": 1})
    welcome(server, make_connection(), "alice")
    assert welcome(server, make_connection(), "bob")[0].user == "bob"


# -- takeover with the resume secret -----------------------------------------------------------


def test_resume_takes_the_session_over_without_presence_flicker(
    make_chat, make_connection, clock, transcript_dir
):
    server = make_chat()
    alice, hello1 = welcome(server, old := make_connection(), "alice")
    for room in ("lobby", "side"):
        join(server, alice, room)
    bob, _ = welcome(server, bob_connection := make_connection(), "bob")
    join(server, bob)
    clock.advance(0)
    lines_before = (transcript_dir / "lobby.jsonl").read_bytes()
    frames_before = len(bob_connection.frames)

    taken, hello2 = welcome(server, new := make_connection(), "alice", resume=hello1["resume"])
    clock.advance(0)
    assert taken is alice
    assert old.was_replaced and not new.was_replaced
    assert (alice.connection, alice.id, hello2["session"]) == (new, hello1["session"], alice.id)
    assert hello2["resumed"] is True
    assert hello2["resume"] != hello1["resume"]
    assert hello2["resume"] == alice.resume and hello2["secret"] == hello1["secret"]
    assert alice.rooms == {"lobby", "side"}
    assert server.sessions.session_count == 2
    assert server.rooms["lobby"].members.keys() == {"alice", "bob"}
    assert bob_connection.frames[frames_before:] == []  # no leave, no join
    assert (transcript_dir / "lobby.jsonl").read_bytes() == lines_before

    # The session lives on in the new connection: it hears the room and is acknowledged.
    old_frames = len(old.frames)
    say(server, bob, "welcome back", "b1")
    say(server, alice, "thanks", "a1")
    clock.advance(0)
    assert texts(new) == ["welcome back", "thanks"]
    assert new.of_type("ack") == [{"type": "ack", "id": "a1", "seq": 4}]
    assert len(old.frames) == old_frames


def test_resume_works_beside_the_name_without_the_user_secret(make_chat, make_connection):
    server = make_chat()
    alice, hello1 = welcome(server, make_connection(), "alice")
    taken, _ = welcome(server, make_connection(), "ALICE", resume=hello1["resume"])
    assert taken is alice


def test_resume_in_token_mode_needs_a_valid_token_of_the_same_sub(
    make_chat, make_connection, tokens
):
    server = make_chat(auth=tokens.section)
    agent, hello1 = welcome(server, old := make_connection(), None, identity=tokens.identity("a7"))
    other, _ = welcome(
        server, make_connection(), None, identity=tokens.identity("b8"), resume=hello1["resume"]
    )
    assert other is not agent and other.user == "b8" and not old.was_replaced
    fresh = tokens.identity("a7", ttl=600)
    taken, _ = welcome(server, make_connection(), None, identity=fresh, resume=hello1["resume"])
    assert taken is agent and old.was_replaced
    assert agent.expires_at == fresh.expires_at  # the new token's lifetime applies


@pytest.mark.parametrize(
    "resume_of",
    [
        lambda hello: hello["session"] + ".not-the-secret",
        lambda hello: hello["session"],
        lambda hello: "no-such-session." + hello["resume"].split(".", 1)[1],
        lambda hello: hello["resume"].upper(),
    ],
)
def test_a_wrong_resume_secret_is_no_takeover(make_chat, make_connection, resume_of):
    server = make_chat()
    alice, hello1 = welcome(server, old := make_connection(), "alice")
    resume = resume_of(hello1)
    code = refusal_code(welcome, server, make_connection(), "alice", resume=resume)
    assert code == errors.NAME_TAKEN
    # With the user secret it is another session, still no takeover.
    other, hello2 = welcome(
        server, make_connection(), "alice", resume=resume, secret=hello1["secret"]
    )
    assert other is not alice and hello2["resumed"] is False
    assert not old.was_replaced and alice.connection is old


def test_a_resume_secret_is_spent_by_its_takeover(make_chat, make_connection):
    server = make_chat()
    alice, hello1 = welcome(server, make_connection(), "alice")
    welcome(server, second := make_connection(), "alice", resume=hello1["resume"])
    code = refusal_code(welcome, server, make_connection(), "alice", resume=hello1["resume"])
    assert code == errors.NAME_TAKEN
    assert alice.connection is second and not second.was_replaced


def test_the_resume_of_a_closed_session_is_no_takeover(make_chat, make_connection, clock):
    server = make_chat()
    alice, hello1 = welcome(server, make_connection(), "alice")
    join(server, alice)
    server.disconnect(alice)
    again, hello2 = welcome(server, make_connection(), "alice", resume=hello1["resume"])
    assert again is not alice and again.id != alice.id
    assert (hello2["resumed"], again.rooms) == (False, set())


def test_another_users_resume_secret_is_no_takeover(make_chat, make_connection):
    server = make_chat()
    _alice, alice_hello = welcome(server, alice_connection := make_connection(), "alice")
    bob, _ = welcome(server, make_connection(), "bob", resume=alice_hello["resume"])
    assert bob.user == "bob" and not alice_connection.was_replaced


def test_a_takeover_is_not_counted_against_the_session_cap(make_chat, make_connection):
    server = make_chat(auth={"max_sessions_per_user": 1})
    alice, hello1 = welcome(server, make_connection(), "alice")
    taken, _ = welcome(server, make_connection(), "alice", resume=hello1["resume"])
    assert taken is alice and server.sessions.session_count == 1


# -- presence is per user ----------------------------------------------------------------------


def test_join_presence_only_for_the_users_first_session_and_leave_only_for_the_last(
    make_chat, make_connection, clock
):
    server = make_chat()
    bob, _ = welcome(server, watcher := make_connection(), "bob")
    join(server, bob)
    laptop, hello1 = welcome(server, make_connection(), "alice")
    phone, _ = welcome(server, make_connection(), "alice", secret=hello1["secret"])
    tablet, _ = welcome(server, make_connection(), "alice", secret=hello1["secret"])
    assert join(server, laptop)["members"] == ["bob", "alice"]
    assert join(server, phone)["members"] == ["bob", "alice"]
    join(server, tablet)
    clock.advance(0)
    assert presence(watcher) == [("bob", "join"), ("alice", "join")]
    server.leave(laptop, wire.Leave("lobby", None))  # a leave frame
    server.disconnect(phone)  # a closed connection
    clock.advance(0)
    assert presence(watcher) == [("bob", "join"), ("alice", "join")]
    assert server.rooms["lobby"].members.keys() == {"bob", "alice"}
    server.disconnect(tablet)
    clock.advance(0)
    assert presence(watcher) == [("bob", "join"), ("alice", "join"), ("alice", "leave")]
    assert server.rooms["lobby"].members.keys() == {"bob"}


def test_a_user_whose_last_session_left_joins_again_with_presence(
    make_chat, make_connection, clock
):
    server = make_chat()
    bob, _ = welcome(server, watcher := make_connection(), "bob")
    join(server, bob)
    alice, hello1 = welcome(server, make_connection(), "alice")
    join(server, alice)
    server.leave(alice, wire.Leave("lobby", None))
    phone, _ = welcome(server, make_connection(), "alice", secret=hello1["secret"])
    join(server, phone)
    clock.advance(0)
    assert presence(watcher)[1:] == [("alice", "join"), ("alice", "leave"), ("alice", "join")]


# -- fan-out, acks and retries across a user's sessions ----------------------------------------


def test_events_reach_every_joined_session_and_the_ack_only_the_sender(
    make_chat, make_connection, clock
):
    server = make_chat()
    laptop, hello1 = welcome(server, laptop_connection := make_connection(), "alice")
    phone, _ = welcome(
        server, phone_connection := make_connection(), "alice", secret=hello1["secret"]
    )
    idle, _ = welcome(
        server, idle_connection := make_connection(), "alice", secret=hello1["secret"]
    )
    for session in (laptop, phone):
        join(server, session)
    clock.advance(0)
    say(server, phone, "from the phone", "p1")
    clock.advance(0)
    assert texts(laptop_connection) == texts(phone_connection) == ["from the phone"]
    assert idle_connection.frames == []  # a session of alice that did not join the room
    assert laptop_connection.of_type("ack") == []
    assert phone_connection.of_type("ack") == [{"type": "ack", "id": "p1", "seq": 2}]
    assert idle.rooms == set()


def test_a_retry_from_another_session_of_the_user_is_acked_not_posted_again(
    make_chat, make_connection, clock, transcript_dir
):
    server = make_chat()
    laptop, _ = welcome(server, laptop_connection := make_connection(), "alice")
    join(server, laptop)
    say(server, laptop, "sent once", "c1")
    clock.advance(0)
    # The laptop's connection dropped before its ack; the tab reconnects as a new session.
    server.disconnect(laptop)
    again, _ = welcome(server, again_connection := make_connection(), "alice")
    join(server, again)
    clock.advance(0)
    say(server, again, "sent once", "c1")
    clock.advance(0)
    lines = [
        json.loads(line) for line in (transcript_dir / "lobby.jsonl").read_bytes().splitlines()
    ]
    assert [line.get("text") for line in lines].count("sent once") == 1
    assert again_connection.frames[-1] == {"type": "ack", "id": "c1", "seq": 2}
    assert texts(again_connection) == []
    assert laptop_connection.of_type("ack")[0]["seq"] == 2


def test_the_same_client_id_from_two_live_sessions_of_a_user_is_one_message(
    make_chat, make_connection, clock
):
    server = make_chat()
    laptop, hello1 = welcome(server, laptop_connection := make_connection(), "alice")
    phone, _ = welcome(
        server, phone_connection := make_connection(), "alice", secret=hello1["secret"]
    )
    for session in (laptop, phone):
        join(server, session)
    say(server, laptop, "same", "c1")
    say(server, phone, "same", "c1")
    clock.advance(0)
    assert texts(laptop_connection) == texts(phone_connection) == ["same"]
    assert laptop_connection.of_type("ack") == phone_connection.of_type("ack")
    assert len(laptop_connection.of_type("ack")) == 1


def test_sessions_of_different_users_with_the_same_client_id_are_two_messages(
    make_chat, make_connection, clock
):
    server = make_chat()
    alice, _ = welcome(server, alice_connection := make_connection(), "alice")
    bob, _ = welcome(server, make_connection(), "bob")
    for session in (alice, bob):
        join(server, session)
    say(server, alice, "one", "c1")
    say(server, bob, "two", "c1")
    clock.advance(0)
    assert texts(alice_connection) == ["one", "two"]


def test_the_display_name_of_a_session_comes_from_its_identity(make_chat, make_connection, clock):
    server = make_chat()
    identity = replace(open_identity("alice"), display_name="Alice L.")
    alice, hello1 = welcome(server, connection := make_connection(), "alice", identity=identity)
    assert (hello1["user"], hello1["name"]) == ("alice", "Alice L.")
    assert join(server, alice)["names"] == {"alice": "Alice L."}
    clock.advance(0)
    assert connection.of_type("presence")[0]["name"] == "Alice L."


# -- through the protocol ----------------------------------------------------------------------


def test_a_resumed_connection_closes_the_old_one_with_4000_and_keeps_the_session(server):
    bob = server.joined("bob")
    old = server.joined("alice")
    resume = old.of_type("welcome")[0]["resume"]
    bob_frames = len(bob.frames)
    new = server.connect()
    new.send_json({"type": "hello", "name": "alice", "resume": resume, "id": "h"})
    server.flush()
    assert old.close_code == errors.CLOSE_REPLACED == 4000
    [welcomed] = new.frames
    assert (welcomed["type"], welcomed["resumed"]) == ("welcome", True)
    assert welcomed["session"] == resume.split(".")[0]
    assert bob.frames[bob_frames:] == []  # the old connection's close made no leave
    assert server.server.rooms["lobby"].members.keys() == {"bob", "alice"}
    new.send_json({"type": "say", "room": "lobby", "text": "back", "id": "c1"})
    server.flush()
    assert [frame["type"] for frame in new.frames[1:]] == ["message", "ack"]
    assert bob.frames[-1]["text"] == "back"


def test_refusals_at_hello_for_sessions_leave_the_connection_open_and_unwelcomed(make_server):
    server = make_server(auth={"max_sessions_per_user": 1})
    first = server.welcomed("alice")
    secret = first.of_type("welcome")[0]["secret"]
    for hello, code in [
        ({"name": "alice"}, errors.NAME_TAKEN),
        ({"name": "alice", "secret": secret}, errors.TOO_MANY_SESSIONS),
    ]:
        client = server.connect()
        client.send_json({"type": "hello", "id": "h1", **hello})
        server.flush()
        assert [(f["type"], f["code"], f["ref"]) for f in client.frames] == [("error", code, "h1")]
        assert client.close_code is None
        client.send_json({"type": "join", "room": "lobby", "id": "j"})
        server.flush()
        assert client.frames[-1]["code"] == errors.HELLO_REQUIRED
    assert first.close_code is None


def test_open_mode_a_second_session_in_other_case_is_the_first_ones_user_and_name(
    make_chat, make_connection
):
    server = make_chat()
    first, hello1 = welcome(server, make_connection(), "Alice")
    second, hello2 = welcome(server, make_connection(), "aLICE", secret=hello1["secret"])
    assert (second.user, second.name) == ("Alice", "Alice")
    assert (hello2["user"], hello2["name"]) == ("Alice", "Alice")
    join(server, first)
    joined = join(server, second)
    assert joined["names"] == {"Alice": "Alice"}
