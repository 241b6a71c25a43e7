"""A customer's profile: a name and email for the agents, validated, written as an event."""

import json

import pytest

from chatd import errors, wire
from chatd.auth import Identity
from chatd.errors import ChatError
from chatd.support import support_room_of

PARSER = wire.FrameParser(max_text_chars=4000)


def parse(**fields):
    return PARSER.parse(json.dumps({"type": "profile", **fields}).encode())


def code_of(**fields) -> str:
    with pytest.raises(ChatError) as caught:
        parse(**fields)
    return caught.value.code


def test_a_profile_takes_a_name_an_email_or_both():
    assert parse(name="  Ann Lee ", email="ann@example.com") == wire.Profile(
        name="Ann Lee", email="ann@example.com", ref=None
    )
    assert parse(email="ann@example.com").name is None
    assert parse(name="Ann", email=None).email is None


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({}, errors.BAD_FRAME),
        ({"name": "x" * 65}, errors.BAD_NAME),
        ({"name": "Ann\nLee"}, errors.BAD_NAME),
        ({"name": "\u200b"}, errors.BAD_TEXT),
        ({"name": "Ann\x07"}, errors.BAD_TEXT),
        ({"name": 7}, errors.BAD_FRAME),
        ({"email": "ann"}, errors.BAD_FRAME),
        ({"email": "ann@localhost"}, errors.BAD_FRAME),
        ({"email": "ann @example.com"}, errors.BAD_FRAME),
        ({"email": "a" * 250 + "@example.com"}, errors.BAD_FRAME),
        ({"email": "<b>@example.com"}, errors.BAD_FRAME),
    ],
)
def test_a_bad_profile_is_refused(fields, code):
    assert code_of(**fields) == code


@pytest.fixture
def desk(make_chat):
    return make_chat(support={"enabled": True})


def welcomed(server, connection, user: str, roles=()):
    identity = Identity(user, user, frozenset(roles))
    session, _welcome = server.hello(connection, identity, wire.Hello(name=user, ref=None))
    return session


def test_the_profile_is_an_event_agents_see_and_names_the_queue_entry(desk, make_connection, clock):
    server = desk
    room = support_room_of("v-aaaaaaaaaaaaaaaa")
    visitor_conn, agent_conn = make_connection(), make_connection()
    visitor = welcomed(server, visitor_conn, "v-aaaaaaaaaaaaaaaa")
    agent = welcomed(server, agent_conn, "bob", roles={"agent"})
    server.join(visitor, wire.Join(room, None, None))
    server.handle(visitor, wire.Profile(name="Ann Lee", email="ann@example.com", ref="p1"))
    clock.advance(0)
    server.say(visitor, wire.Say(room=room, text="my order", id="m1"))
    clock.advance(0)
    server.join(agent, wire.Join(room, None, None))
    clock.advance(0)
    events = json.loads(server.history(agent, wire.History(room, None, None, None)))["events"]
    profile = next(event for event in events if event["type"] == "profile")
    assert (profile["from"], profile["name"], profile["email"]) == (
        visitor.user,
        "Ann Lee",
        "ann@example.com",
    )
    assert {"type": "ack", "id": "p1", "seq": profile["seq"]} in visitor_conn.frames
    message = next(event for event in events if event["type"] == "message")
    assert message["name"] == "Ann Lee"
    [entry] = json.loads(server.handle(agent, wire.Queue(ref=None)))["conversations"]
    assert (entry["customer_name"], entry["customer_email"]) == ("Ann Lee", "ann@example.com")


def test_a_returning_visitor_keeps_the_profile_name(desk, make_connection, clock):
    server = desk
    user = "v-bbbbbbbbbbbbbbbb"
    room = support_room_of(user)
    first = welcomed(server, make_connection(), user)
    server.join(first, wire.Join(room, None, None))
    server.say(first, wire.Say(room=room, text="hello", id="m1"))
    clock.advance(0)
    server.handle(first, wire.Profile(name="Ann", email=None, ref=None))
    clock.advance(0)
    server.disconnect(first)
    # Back with a hello that names no one (the visitor's display name is its id).
    connection = make_connection()
    identity = Identity(user, user, frozenset())
    again, welcome = server.hello(connection, identity, wire.Hello(name=user, ref=None))
    assert (again.name, welcome["name"]) == ("Ann", "Ann")
    server.join(again, wire.Join(room, None, None))
    server.say(again, wire.Say(room=room, text="still there?", id="m2"))
    clock.advance(0)
    agent = welcomed(server, make_connection(), "bob", roles={"agent"})
    [entry] = json.loads(server.handle(agent, wire.Queue(ref=None)))["conversations"]
    assert entry["customer_name"] == "Ann" and entry["last"]["name"] == "Ann"


def test_agents_leave_no_profile_and_customers_only_in_their_own_room(desk, make_connection):
    server = desk
    agent = welcomed(server, make_connection(), "bob", roles={"agent"})
    with pytest.raises(ChatError) as caught:
        server.handle(agent, wire.Profile(name="Bob", email=None, ref=None))
    assert caught.value.code == errors.FORBIDDEN
    customer = welcomed(server, make_connection(), "carol")
    with pytest.raises(ChatError) as caught:
        server.handle(customer, wire.Profile(name="Carol", email=None, ref=None))
    assert caught.value.code == errors.NOT_JOINED
