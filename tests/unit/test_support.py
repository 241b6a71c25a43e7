"""The support desk: collision-free conversation rooms, who may see what, the queue's status
machine, paging and filters, and its rebuilding from transcripts after a restart.

Driven through the real Server with the desk attached by `tap.build_server`.
"""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd import errors, wire
from chatd.auth import Identity
from chatd.errors import ChatError
from chatd.names import ROOM_NAME, USER_ID
from chatd.support import customer_of, support_room_of

TTL = 600.0


def refusal_code(call, *args) -> str:
    with pytest.raises(ChatError) as caught:
        call(*args)
    return caught.value.code


@pytest.fixture
def desk(make_chat):
    def make(**support):
        return make_chat(support={"enabled": True, "resolved_ttl": TTL, **support})

    return make


@pytest.fixture
def person(make_connection):
    """`person(server, user, agent=False, name=None)`: a welcomed session."""

    def person(server, user: str, agent: bool = False, name: str | None = None):
        identity = Identity(user, name or user, frozenset({"agent"} if agent else ()))
        session, welcome = server.hello(
            make_connection(), identity, wire.Hello(name=user, ref=None)
        )
        session.welcome = welcome
        return session

    return person


def join(server, session, room: str) -> dict:
    return json.loads(server.join(session, wire.Join(room, None, None)))


def say(server, session, room: str, text: str) -> None:
    server.say(session, wire.Say(room=room, text=text, id=f"id-{text}"))


def queue(server, agent, **request) -> dict:
    return json.loads(server.handle(agent, wire.Queue(ref="q", **request)))


def queued(server, agent, **request) -> list[tuple[str, str]]:
    return [(c["customer"], c["status"]) for c in queue(server, agent, **request)["conversations"]]


def resolve(server, agent, room: str, ref: str | None = "r1") -> None:
    server.handle(agent, wire.Resolve(room, ref))


def writes(server, customer, text: str, clock) -> str:
    """The customer joins (if needed) and writes in their conversation; returns its room."""
    room = support_room_of(customer.user)
    if room not in customer.rooms:
        join(server, customer, room)
    say(server, customer, room, text)
    clock.advance(0)
    return room


# -- naming ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("one", "other"),
    [("a.b", "a_b"), ("Alice", "alice"), ("a-b", "a_b"), ("bob", "Bob"), ("x.y.z", "x_y-z")],
)
def test_ids_that_used_to_collide_get_different_rooms(one, other):
    assert support_room_of(one) != support_room_of(other)
    assert (customer_of(support_room_of(one)), customer_of(support_room_of(other))) == (one, other)


def test_plain_ids_keep_readable_room_names():
    assert support_room_of("alice-42") == "support-alice-42"
    assert support_room_of("Alice").startswith("support-_")


@pytest.mark.parametrize(
    "room",
    ["lobby", "support-", "support-_", "support-_0189", "support-_" + "a" * 55, "support-x_y"],
)
def test_rooms_that_are_no_customers_conversation(room):
    assert customer_of(room) is None


def test_a_plain_id_spelled_in_base32_is_not_its_room():
    """Each user id has exactly one room: `support-_<base32 of alice>` is not alice's."""
    assert customer_of("support-_mfwgsy3f") is None  # base32("alice"), lower, unpadded


user_ids = st.from_regex(USER_ID, fullmatch=True)


@given(user_ids, user_ids)
def test_support_room_of_is_injective_and_fits_the_room_grammar(one, other):
    rooms = support_room_of(one), support_room_of(other)
    assert all(ROOM_NAME.fullmatch(room) for room in rooms)
    assert (rooms[0] == rooms[1]) == (one == other)
    assert customer_of(rooms[0]) == one and customer_of(rooms[1]) == other


# -- who may see what --------------------------------------------------------------------------


def test_a_customer_is_told_its_room_in_welcome_and_may_join_only_it(desk, person):
    server = desk()
    alice, bob = person(server, "a.b"), person(server, "a_b")
    assert alice.welcome["support_room"] == support_room_of("a.b")
    assert join(server, alice, support_room_of("a.b"))["members"] == ["a.b"]
    assert join(server, bob, support_room_of("a_b"))["members"] == ["a_b"]
    for room in (support_room_of("a.b"), "lobby", "support-a"):
        assert refusal_code(server.join, bob, wire.Join(room, None, None)) == errors.FORBIDDEN
    assert refusal_code(server.who, bob, wire.Who(support_room_of("a.b"), None)) == (
        errors.FORBIDDEN
    )
    history = wire.History(support_room_of("a.b"), None, None, None)
    assert refusal_code(server.history, bob, history) == errors.FORBIDDEN
    assert bob.rooms == {support_room_of("a_b")}


def test_customers_may_join_public_rooms_only_when_allowed(desk, person):
    closed = desk()
    assert refusal_code(closed.join, person(closed, "carol"), wire.Join("lobby", None, None)) == (
        errors.FORBIDDEN
    )
    open_desk = desk(customers_join_public=True)
    assert join(open_desk, person(open_desk, "carol"), "lobby")["members"] == ["carol"]


def test_agents_see_public_rooms_and_existing_conversations_only(desk, person, clock):
    server = desk()
    agent = person(server, "ag", agent=True)
    assert "support_room" not in agent.welcome
    writes(server, person(server, "alice"), "help", clock)
    assert join(server, agent, "lobby")["room"] == "lobby"
    assert join(server, agent, support_room_of("alice"))["members"] == ["alice", "ag"]
    nobody = wire.Join(support_room_of("nobody"), None, None)
    assert refusal_code(server.join, agent, nobody) == errors.FORBIDDEN
    assert support_room_of("nobody") not in server.rooms


# -- the queue ---------------------------------------------------------------------------------


def test_a_visitor_who_never_wrote_is_not_in_the_queue(desk, person, clock):
    server = desk()
    agent = person(server, "ag", agent=True)
    visitor = person(server, "visitor")
    join(server, visitor, support_room_of("visitor"))
    clock.advance(0)
    server.disconnect(visitor)
    clock.advance(0)
    assert queued(server, agent) == []
    writes(server, person(server, "writer"), "hello?", clock)
    assert queued(server, agent) == [("writer", "open")]


def test_a_queue_entry_says_who_waits_since_when_and_what_was_said_last(desk, person, clock):
    server = desk()
    agent = person(server, "ag", agent=True, name="Agent Smith")
    customer = person(server, "Cust.1", name="Customer One")
    clock.advance(100)
    room = writes(server, customer, "first", clock)
    clock.advance(5)
    writes(server, customer, "second", clock)
    [entry] = queue(server, agent)["conversations"]
    assert entry == {
        "room": room,
        "customer": "Cust.1",
        "customer_name": "Customer One",
        "status": "open",
        "waiting_since": "1970-01-01T00:01:40.000Z",
        "updated": "1970-01-01T00:01:45.000Z",
        "agents": [],
        "last": {
            "from": "Cust.1",
            "name": "Customer One",
            "text": "second",
            "ts": "1970-01-01T00:01:45.000Z",
        },
    }
    join(server, agent, room)
    say(server, agent, room, "how can I help?")
    clock.advance(0)
    [entry] = queue(server, agent)["conversations"]
    assert (entry["waiting_since"], entry["agents"]) == (None, ["ag"])
    assert (entry["last"]["from"], entry["last"]["name"]) == ("ag", "Agent Smith")


def test_resolve_then_a_customer_message_reopens(desk, person, clock, transcript_dir):
    server = desk()
    agent = person(server, "ag", agent=True)
    customer = person(server, "alice")
    room = writes(server, customer, "help", clock)
    join(server, agent, room)
    clock.advance(0)
    resolve(server, agent, room, "r1")
    clock.advance(0)
    assert queued(server, agent) == [("alice", "resolved")]
    assert agent.connection.frames[-1] == {"type": "ack", "id": "r1", "seq": 4}
    status = json.loads((transcript_dir / f"{room}.jsonl").read_bytes().splitlines()[-1])
    assert {k: status[k] for k in ("type", "from", "name", "status")} == {
        "type": "status",
        "from": "ag",
        "name": "ag",
        "status": "resolved",
    }
    assert customer.connection.frames[-1]["type"] == "status"  # the customer sees it too
    writes(server, customer, "one more thing", clock)
    assert queued(server, agent) == [("alice", "open")]
    [entry] = queue(server, agent)["conversations"]
    assert entry["waiting_since"] is not None


def test_an_agents_message_does_not_reopen_a_resolved_conversation(desk, person, clock):
    server = desk()
    agent = person(server, "ag", agent=True)
    room = writes(server, person(server, "alice"), "help", clock)
    join(server, agent, room)
    resolve(server, agent, room, None)
    clock.advance(0)
    say(server, agent, room, "glad to help")
    clock.advance(0)
    assert queued(server, agent) == [("alice", "resolved")]


def test_resolved_conversations_leave_the_queue_after_resolved_ttl(desk, person, clock):
    server = desk()
    agent = person(server, "ag", agent=True)
    done = writes(server, person(server, "done"), "help", clock)
    writes(server, person(server, "waiting"), "help", clock)
    resolve(server, agent, done)
    clock.advance(0)
    clock.advance(TTL - 1)
    assert queued(server, agent) == [("waiting", "open"), ("done", "resolved")]
    clock.advance(1)
    assert queued(server, agent) == [("waiting", "open")]


def test_the_queue_pages_with_limit_and_before_and_filters_by_status(desk, person, clock):
    server = desk()
    agent = person(server, "ag", agent=True)
    customers = [f"c{number}" for number in range(7)]
    for customer in customers:
        writes(server, person(server, customer), "help", clock)
        clock.advance(1)
    for customer in ("c1", "c4"):
        resolve(server, agent, support_room_of(customer))
        clock.advance(1)
    seen, before, pages = [], None, 0
    while True:
        page = queue(server, agent, limit=2, **({"before": before} if before else {}))
        pages += 1
        seen += [(c["customer"], c["status"]) for c in page["conversations"]]
        assert (page["type"], page["ref"], page["status"]) == ("queue", "q", "all")
        assert page["total"] == 7
        if not page["more"]:
            assert page["next"] is None
            break
        before = page["next"]
    # Waiting longest first, then resolved, latest resolved first.
    assert seen == [(c, "open") for c in ("c0", "c2", "c3", "c5", "c6")] + [
        ("c4", "resolved"),
        ("c1", "resolved"),
    ]
    assert pages == 4
    assert queued(server, agent, status="resolved") == [("c4", "resolved"), ("c1", "resolved")]
    assert [c for c, _ in queued(server, agent, status="open")] == ["c0", "c2", "c3", "c5", "c6"]
    page = queue(server, agent, status="open", limit=3)
    assert [c["customer"] for c in page["conversations"]] == ["c0", "c2", "c3"]
    rest = queue(server, agent, status="open", limit=3, before=page["next"])
    assert ([c["customer"] for c in rest["conversations"]], rest["more"]) == (["c5", "c6"], False)
    assert (page["total"], rest["total"]) == (5, 5)


def test_a_cursor_the_server_did_not_issue_is_a_bad_frame(desk, person):
    server = desk()
    agent = person(server, "ag", agent=True)
    request = wire.Queue(ref="q", before="not a cursor")
    with pytest.raises(ChatError) as caught:
        server.handle(agent, request)
    assert (caught.value.code, caught.value.ref) == (errors.BAD_FRAME, "q")


def test_only_agents_may_watch_the_queue_or_resolve(desk, person, clock):
    server = desk(customers_join_public=True)
    customer = person(server, "alice")
    room = writes(server, customer, "help", clock)
    assert refusal_code(server.handle, customer, wire.Queue(ref="q")) == errors.FORBIDDEN
    assert refusal_code(server.handle, customer, wire.Resolve(room, "r")) == errors.FORBIDDEN
    agent = person(server, "ag", agent=True)
    join(server, agent, "lobby")
    assert refusal_code(server.handle, agent, wire.Resolve("lobby", "r")) == errors.FORBIDDEN
    assert queued(server, agent) == [("alice", "open")]


def test_agents_watching_the_queue_are_sent_each_change(desk, person, clock):
    server = desk()
    agent = person(server, "ag", agent=True)
    connection = agent.connection
    queue(server, agent)
    writes(server, person(server, "alice"), "help", clock)
    updates = connection.of_type("conversation")
    assert [(u["customer"], u["status"], u["last"]["text"]) for u in updates] == [
        ("alice", "open", "help")
    ]
    server.disconnect(agent)
    writes(server, person(server, "bob"), "help", clock)
    assert len(connection.of_type("conversation")) == 1


# -- after a restart ---------------------------------------------------------------------------


def test_the_queue_is_rebuilt_from_the_transcripts_after_a_restart(desk, person, clock):
    before = desk()
    agent = person(before, "ag", agent=True)
    person(before, "visitor")  # never joined or wrote
    visitor_room = support_room_of("looker")
    join(before, person(before, "looker"), visitor_room)  # joined, never wrote
    for customer in ("Open.One", "done", "reopened"):
        writes(before, person(before, customer, name=f"{customer}!"), f"help {customer}", clock)
        clock.advance(1)
    resolve(before, agent, support_room_of("done"))
    resolve(before, agent, support_room_of("reopened"))
    clock.advance(0)
    writes(before, before.sessions.of_user("reopened")[0], "again", clock)
    expected = queue(before, agent)["conversations"]
    assert [(c["customer"], c["status"]) for c in expected] == [
        ("Open.One", "open"),
        ("reopened", "open"),
        ("done", "resolved"),
    ]
    before.shutdown()

    after = desk()
    assert after.rooms == {}  # rebuilt without loading any room
    assert queue(after, person(after, "ag2", agent=True))["conversations"] == [
        {**entry, "agents": []} for entry in expected
    ]


def test_a_resolved_conversation_past_its_ttl_is_not_rebuilt(desk, person, clock):
    before = desk()
    agent = person(before, "ag", agent=True)
    resolve_me = writes(before, person(before, "done"), "help", clock)
    resolve(before, agent, resolve_me)
    clock.advance(0)
    before.shutdown()
    clock.advance(TTL)
    after = desk()
    assert queued(after, person(after, "ag", agent=True)) == []


def test_a_conversation_whose_message_is_in_a_rotated_file_is_rebuilt(
    make_chat, person, clock, transcript_dir
):
    sections = {
        "support": {"enabled": True, "resolved_ttl": TTL},
        "transcripts": {"rotate": "never", "rotate_size": 1},  # every batch starts a new file
    }
    before = make_chat(**sections)
    room = writes(before, person(before, "alice", name="Alice L."), "my order is late", clock)
    join(before, person(before, "ag", agent=True), room)
    clock.advance(0)
    before.shutdown()
    assert list(transcript_dir.glob(f"{room}.*.jsonl"))  # the customer's words were rotated away

    after = make_chat(**sections)
    [entry] = queue(after, person(after, "ag2", agent=True))["conversations"]
    assert (entry["customer"], entry["customer_name"], entry["status"]) == (
        "alice",
        "Alice L.",
        "open",
    )
    assert entry["last"]["text"] == "my order is late"
    assert entry["waiting_since"] is not None
