"""The support desk: collision-free conversation rooms, who may see what, the queue's status
machine, paging and filters, and its rebuilding from transcripts after a restart.

Driven through the real Server with the desk attached by `tap.build_server`.
"""

import json

import pytest
from desk_stand_in import SharedDesk
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
        session.connection.welcome = welcome
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
    assert alice.connection.welcome["support_room"] == support_room_of("a.b")
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
    assert "support_room" not in agent.connection.welcome
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
        "assignee": None,
        "assignee_name": None,
        "rating": None,
        "unread": 2,
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


# -- assignment --------------------------------------------------------------------------------


def assign(server, agent, room: str, to: str | None = None, ref: str | None = "a1"):
    return server.handle(agent, wire.Assign(room=room, agent=to, ref=ref))


def transfer(server, agent, room: str, to: str | None, ref: str | None = "t1"):
    return server.handle(agent, wire.Transfer(room=room, agent=to, ref=ref))


def assignee(server, agent, room: str) -> str | None:
    [entry] = [c for c in queue(server, agent)["conversations"] if c["room"] == room]
    return entry["assignee"]


def transcript_kinds(transcript_dir, room: str) -> list[dict]:
    lines = (transcript_dir / f"{room}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_an_agent_claims_a_conversation_and_it_is_in_the_transcript(
    desk, person, clock, transcript_dir
):
    server = desk()
    agent = person(server, "ag", agent=True, name="Agent Smith")
    room = writes(server, person(server, "alice"), "help", clock)
    assign(server, agent, room)
    clock.advance(0)
    assert agent.connection.frames[-1]["type"] == "ack"
    [event] = [e for e in transcript_kinds(transcript_dir, room) if e["type"] == "assignment"]
    assert (event["from"], event["assignee"], event["assignee_name"]) == ("ag", "ag", "Agent Smith")
    [entry] = queue(server, agent)["conversations"]
    assert (entry["assignee"], entry["assignee_name"]) == ("ag", "Agent Smith")


def test_of_two_claims_in_one_turn_the_first_wins_and_the_second_is_a_conflict(
    desk, person, clock, transcript_dir
):
    server = desk()
    first, second = person(server, "ag1", agent=True), person(server, "ag2", agent=True)
    room = writes(server, person(server, "alice"), "help", clock)
    assign(server, first, room)
    assert refusal_code(assign, server, second, room) == errors.CONFLICT  # before any write
    clock.advance(0)
    assert assignee(server, first, room) == "ag1"
    assigned = [e for e in transcript_kinds(transcript_dir, room) if e["type"] == "assignment"]
    assert [e["assignee"] for e in assigned] == ["ag1"]


def test_claiming_ones_own_conversation_again_writes_nothing(desk, person, clock, transcript_dir):
    server = desk()
    agent = person(server, "ag", agent=True)
    room = writes(server, person(server, "alice"), "help", clock)
    assign(server, agent, room)
    clock.advance(0)
    lines = transcript_kinds(transcript_dir, room)
    reply = json.loads(assign(server, agent, room, ref="again"))
    clock.advance(0)
    assert (reply["type"], reply["id"], reply["seq"]) == ("ack", "again", lines[-1]["seq"])
    assert transcript_kinds(transcript_dir, room) == lines


def test_give_to_another_agent_transfer_and_unassign(desk, person, clock):
    server = desk()
    ag1, ag2 = person(server, "ag1", agent=True), person(server, "ag2", agent=True)
    room = writes(server, person(server, "alice"), "help", clock)
    assign(server, ag1, room, to="ag2")
    clock.advance(0)
    assert assignee(server, ag1, room) == "ag2"
    assert refusal_code(assign, server, ag1, room) == errors.CONFLICT
    transfer(server, ag1, room, "ag1")  # any agent may move it
    clock.advance(0)
    assert assignee(server, ag1, room) == "ag1"
    transfer(server, ag2, room, None)
    clock.advance(0)
    assert assignee(server, ag1, room) is None


def test_assignment_refusals(desk, person, clock):
    server = desk()
    agent = person(server, "ag", agent=True)
    customer = person(server, "alice")
    room = writes(server, customer, "help", clock)
    assert refusal_code(assign, server, customer, room) == errors.FORBIDDEN
    assert refusal_code(assign, server, agent, support_room_of("nobody")) == errors.NOT_FOUND
    assert refusal_code(assign, server, agent, room, "ghost") == errors.NOT_FOUND  # no such agent
    assert refusal_code(transfer, server, agent, room, "alice") == errors.NOT_FOUND  # no agent
    assert assignee(server, agent, room) is None


def test_a_claim_that_cannot_be_stored_is_undone(
    desk, person, clock, transcript_dir, limited_file_size
):
    server = desk()
    agent = person(server, "ag", agent=True)
    room = writes(server, person(server, "alice"), "help", clock)
    size = (transcript_dir / f"{room}.jsonl").stat().st_size
    assign(server, agent, room)
    limited_file_size(size + 10)
    clock.advance(0)
    limited_file_size(None)
    assert agent.connection.frames[-1]["code"] == errors.UNAVAILABLE
    assert assignee(server, agent, room) is None
    assign(server, agent, room)  # free to be claimed again
    clock.advance(0)
    assert assignee(server, agent, room) == "ag"


def test_the_queue_filters_mine_and_unassigned(desk, person, clock):
    server = desk()
    ag1, ag2 = person(server, "ag1", agent=True), person(server, "ag2", agent=True)
    rooms = {name: writes(server, person(server, name), "help", clock) for name in "abc"}
    assign(server, ag1, rooms["a"])
    assign(server, ag2, rooms["b"])
    clock.advance(0)
    assert {c["customer"] for c in queue(server, ag1, view="mine")["conversations"]} == {"a"}
    assert {c["customer"] for c in queue(server, ag2, view="mine")["conversations"]} == {"b"}
    unassigned = queue(server, ag1, view="unassigned")
    assert ([c["customer"] for c in unassigned["conversations"]], unassigned["total"]) == (["c"], 1)
    assert queue(server, ag1)["total"] == 3


def test_assignments_are_rebuilt_after_a_restart_even_past_a_resolve(desk, person, clock):
    before = desk()
    agent = person(before, "ag", agent=True, name="Agent")
    customer = person(before, "alice")
    room = writes(before, customer, "help", clock)
    assign(before, agent, room)
    clock.advance(0)
    resolve(before, agent, room)
    clock.advance(0)
    writes(before, customer, "me again", clock)  # reopened, still the agent's
    other = writes(before, person(before, "bob"), "hi", clock)
    expected = queue(before, agent)["conversations"]
    before.shutdown()

    after = desk()
    entries = queue(after, person(after, "ag2", agent=True))["conversations"]
    assert {c["room"]: (c["assignee"], c["assignee_name"]) for c in entries} == {
        room: ("ag", "Agent"),
        other: (None, None),
    }
    assert [c["status"] for c in entries] == [c["status"] for c in expected]


# -- auto-assignment and availability ----------------------------------------------------------


def test_round_robin_spreads_conversations_over_online_agents_within_capacity(desk, person, clock):
    server = desk(auto_assign="round_robin", max_open_per_agent=2)
    agents = [person(server, f"ag{i}", agent=True) for i in range(3)]
    rooms = []
    for number in range(7):
        rooms.append(writes(server, person(server, f"c{number}"), "help", clock))
        clock.advance(1)
    clock.advance(0)
    entries = queue(server, agents[0])["conversations"]
    load = {}
    for entry in entries:
        load[entry["assignee"]] = load.get(entry["assignee"], 0) + 1
    assert load == {"ag0": 2, "ag1": 2, "ag2": 2, None: 1}
    [waiting] = [e["room"] for e in entries if e["assignee"] is None]
    assert waiting == rooms[-1]  # the last to come waits
    holder = next(e["assignee"] for e in entries if e["room"] == rooms[0])
    resolve(server, server.sessions.of_user(holder)[0], rooms[0])
    clock.advance(0)
    clock.advance(0)
    assert assignee(server, agents[0], waiting) == holder  # the freed agent takes it


def test_away_agents_get_nothing_and_coming_back_online_takes_the_waiting(desk, person, clock):
    server = desk(auto_assign="round_robin", max_open_per_agent=0)
    agent = person(server, "ag", agent=True)
    reply = json.loads(server.handle(agent, wire.Availability(status="away", ref="v")))
    assert (reply["type"], reply["status"]) == ("availability", "away")
    room = writes(server, person(server, "alice"), "help", clock)
    clock.advance(0)
    assert assignee(server, agent, room) is None
    server.handle(agent, wire.Availability(status="online", ref=None))
    clock.advance(0)
    assert assignee(server, agent, room) == "ag"


def test_customers_are_told_whether_any_agent_is_online(desk, person):
    server = desk()
    early = person(server, "early")
    assert early.connection.welcome["agents_online"] is False
    agent = person(server, "ag", agent=True)
    assert agent.connection.welcome["availability"] == "online"
    late = person(server, "late")
    assert late.connection.welcome["agents_online"] is True
    assert early.connection.of_type("agents") == [{"type": "agents", "online": True}]
    server.handle(agent, wire.Availability(status="away", ref=None))
    assert late.connection.of_type("agents") == [{"type": "agents", "online": False}]
    server.handle(agent, wire.Availability(status="online", ref=None))
    server.disconnect(agent)  # the last session: offline
    assert [f["online"] for f in early.connection.of_type("agents")] == [True, False, True, False]


def test_an_agent_is_offline_only_when_the_last_session_closes(desk, person, make_connection):
    server = desk()
    watcher = person(server, "boss", agent=True)
    queue(server, watcher)
    first = person(server, "ag", agent=True)
    identity = Identity("ag", "ag", frozenset({"agent"}))
    second, _ = server.hello(
        make_connection(),
        identity,
        wire.Hello(name="ag", ref=None, secret=first.connection.welcome["secret"]),
    )
    server.disconnect(first)
    assert [a["status"] for a in queue(server, watcher)["availability"] if a["user"] == "ag"] == [
        "online"
    ]
    server.disconnect(second)
    updates = [(f["user"], f["status"]) for f in watcher.connection.of_type("agent")]
    assert updates == [("ag", "online"), ("ag", "offline")]


def test_only_agents_have_an_availability(desk, person):
    server = desk()
    customer = person(server, "alice")
    assert (
        refusal_code(server.handle, customer, wire.Availability(status="away", ref=None))
        == errors.FORBIDDEN
    )


# -- ratings and the desk's KPIs ---------------------------------------------------------------


def metric(server, name: str, **labels) -> float | None:
    return server.metrics.registry.get_sample_value(name, labels)


def test_a_customer_rates_a_resolved_conversation(desk, person, clock, transcript_dir):
    server = desk()
    agent = person(server, "ag", agent=True)
    customer = person(server, "alice")
    room = writes(server, customer, "help", clock)
    rate = wire.Rate(room=room, score=4, comment="quick, thanks", ref="r")
    assert refusal_code(server.handle, customer, rate) == errors.FORBIDDEN  # not resolved yet
    resolve(server, agent, room)
    clock.advance(0)
    other = person(server, "bob")
    assert refusal_code(server.handle, other, rate) == errors.FORBIDDEN  # not bob's
    server.handle(customer, rate)
    clock.advance(0)
    assert customer.connection.frames[-1]["type"] == "ack"
    [rating] = [e for e in transcript_kinds(transcript_dir, room) if e["type"] == "rating"]
    assert (rating["from"], rating["score"], rating["comment"]) == ("alice", 4, "quick, thanks")
    [entry] = queue(server, agent)["conversations"]
    assert entry["rating"] == 4
    assert metric(server, "chatd_support_ratings_total", score="4") == 1
    writes(server, customer, "one more thing", clock)  # reopened: a new rating is due
    assert queue(server, agent)["conversations"][0]["rating"] is None


def test_first_response_and_resolution_times_and_conversation_counts(desk, person, clock):
    server = desk()
    agent = person(server, "ag", agent=True)
    customer = person(server, "alice")
    clock.advance(1000)
    room = writes(server, customer, "help", clock)
    join(server, agent, room)
    assert metric(server, "chatd_support_conversations", state="waiting") == 1
    assert metric(server, "chatd_support_conversations", state="unassigned") == 1
    clock.advance(90)
    say(server, agent, room, "hello, how can I help?")
    clock.advance(0)
    assert metric(server, "chatd_support_first_response_seconds_sum") == 90
    assert metric(server, "chatd_support_conversations", state="waiting") == 0
    clock.advance(30)
    say(server, agent, room, "a second answer is no first response")
    clock.advance(0)
    assert metric(server, "chatd_support_first_response_seconds_count") == 1
    resolve(server, agent, room)
    clock.advance(0)
    assert metric(server, "chatd_support_resolution_seconds_sum") == 120
    assert metric(server, "chatd_support_conversations", state="resolved") == 1
    assert metric(server, "chatd_support_conversations", state="open") == 0


def test_each_agent_sees_the_customer_messages_they_have_not_read(desk, person, clock):
    server = desk()
    ann, bob = person(server, "ann", agent=True), person(server, "bob", agent=True)
    customer = person(server, "alice")
    room = writes(server, customer, "one", clock)
    writes(server, customer, "two", clock)
    writes(server, customer, "three", clock)
    join(server, ann, room)
    seqs = [e["seq"] for e in customer.connection.of_type("message")]
    server.handle(ann, wire.Read(room=room, seq=seqs[1], ref=None))
    clock.advance(0)
    [for_ann] = queue(server, ann)["conversations"]
    [for_bob] = queue(server, bob)["conversations"]
    assert (for_ann["unread"], for_bob["unread"]) == (1, 3)
    writes(server, customer, "four", clock)  # the live update carries each one's own count
    assert ann.connection.of_type("conversation")[-1]["unread"] == 2
    assert bob.connection.of_type("conversation")[-1]["unread"] == 4


# -- several nodes (Redis mode: chatd/redis/desk.py is the other side of `shared`) --------------


def test_this_node_s_agents_and_their_choices_are_told_to_the_other_nodes(desk, person):
    server = desk()
    server.desk.shared = shared = SharedDesk()
    agent = person(server, "ag", agent=True)
    server.handle(agent, wire.Availability(status="away", ref=None))
    server.disconnect(agent)
    assert shared.told == [("sessions", "ag", 1), ("chose", "ag", "away"), ("sessions", "ag", 0)]


def test_agents_on_other_nodes_are_online_here_until_their_node_is_gone(desk, person):
    server = desk()
    server.desk.shared = SharedDesk()
    customer = person(server, "alice")
    watcher = person(server, "boss", agent=True)
    server.handle(watcher, wire.Availability(status="away", ref=None))
    queue(server, watcher)
    server.desk.agent_elsewhere("node-b", "ag", "Agatha", 2)
    server.desk.agent_elsewhere("node-c", "ag", "Agatha", 1)
    server.desk.chosen_elsewhere("ag", "away")
    server.desk.chosen_elsewhere("ag", "online")
    server.desk.agent_elsewhere("node-c", "ag", "Agatha", 0)  # still on node b
    server.desk.node_gone("node-b")
    told = [f["online"] for f in customer.connection.of_type("agents")]
    assert told == [True, False, True, False, True, False]  # boss; then ag, elsewhere
    updates = [(f["user"], f["name"], f["status"]) for f in watcher.connection.of_type("agent")]
    assert updates == [
        ("ag", "Agatha", "online"),
        ("ag", "Agatha", "away"),
        ("ag", "Agatha", "online"),
        ("ag", "Agatha", "offline"),
    ]


def test_only_the_node_that_leads_the_desk_auto_assigns(desk, person, clock):
    server = desk(auto_assign="round_robin", max_open_per_agent=0)
    server.desk.shared = shared = SharedDesk(leading=False)
    agent = person(server, "ag", agent=True)
    room = writes(server, person(server, "alice"), "help", clock)
    clock.advance(0)
    assert assignee(server, agent, room) is None  # another node assigns
    shared.leading = True
    server.desk.auto_assign()  # as chatd/redis/desk.py does when this node takes the lease
    clock.advance(0)
    assert assignee(server, agent, room) == "ag"


def test_a_claim_refused_where_seqs_are_given_does_not_undo_a_later_assignment(desk, person, clock):
    server = desk()
    agent = person(server, "ag", agent=True)
    room = writes(server, person(server, "alice"), "help", clock)
    conversation = server.desk.conversations[room]
    posted = []
    server.pipeline.post = lambda room, draft, ack_to=None, undo=None: posted.append(undo)
    assign(server, agent, room)
    assert conversation.assignee == "ag"  # taken as done at once
    conversation.assignee, conversation.assignee_name = "bo", "Bo"  # another node's came first
    posted[0]()  # ours is refused (conflict)
    assert conversation.assignee == "bo"
