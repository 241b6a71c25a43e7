"""Room lifecycle: rooms leave memory when idle and come back from their transcripts; max_rooms
counts rooms in memory; idle files are closed; creating rooms costs a per-user budget.

Driven through the real Server on a task.Clock; the sweep runs on that clock.
"""

import json

import pytest

from chatd import errors, wire
from chatd.auth import Identity
from chatd.config import RoomPolicy
from chatd.errors import ChatError

IDLE = 60.0
SWEEP = IDLE / 4  # the server sweeps every idle_unload / 4 (at most every 30 s)


def refusal_code(call, *args) -> str:
    with pytest.raises(ChatError) as caught:
        call(*args)
    return caught.value.code


@pytest.fixture
def chat(make_chat):
    def make(**rooms):
        return make_chat(rooms={"idle_unload": IDLE, **rooms})

    return make


@pytest.fixture
def person(make_connection):
    """`person(server, name)`: a welcomed session of a new user (its connection records)."""

    def person(server, name: str):
        identity = Identity(name, name, frozenset())
        session, _ = server.hello(make_connection(), identity, wire.Hello(name=name, ref=None))
        return session

    return person


def join(server, session, room: str, since: wire.Since | None = None) -> dict:
    return json.loads(server.join(session, wire.Join(room, since, None)))


def leave(server, session, room: str) -> None:
    server.leave(session, wire.Leave(room, None))


def say(server, session, room: str, text: str) -> None:
    server.say(session, wire.Say(room=room, text=text, id=f"id-{text}"))


def visit(server, session, room: str, clock, text: str | None = None) -> None:
    """Join a room, maybe say something, leave, and let it all commit."""
    join(server, session, room)
    if text is not None:
        say(server, session, room, text)
    leave(server, session, room)
    clock.advance(0)


# -- unloading idle rooms and loading them again -----------------------------------------------


def test_a_room_with_no_members_unloads_after_idle_unload(chat, person, clock):
    server = chat()
    alice = person(server, "alice")
    visit(server, alice, "lobby", clock, "hello")
    assert "lobby" in server.rooms
    clock.advance(IDLE - 1)
    assert "lobby" in server.rooms  # idle, but not for long enough
    clock.advance(1 + SWEEP)
    assert "lobby" not in server.rooms
    assert server.metrics.room_unloads._value.get() == 1


def test_a_room_with_a_member_never_unloads(chat, person, clock):
    server = chat()
    alice = person(server, "alice")
    join(server, alice, "lobby")
    clock.advance(0)
    clock.advance(IDLE * 10)
    assert "lobby" in server.rooms


def test_activity_restarts_the_idle_time(chat, person, clock):
    server = chat()
    alice, bob = person(server, "alice"), person(server, "bob")
    visit(server, alice, "lobby", clock, "hello")
    clock.advance(IDLE - SWEEP)
    server.who(bob, wire.Who("lobby", None))  # a lookup is activity too
    clock.advance(IDLE - SWEEP)
    assert "lobby" in server.rooms
    clock.advance(2 * SWEEP)
    assert "lobby" not in server.rooms


@pytest.mark.parametrize("how", ["join", "history", "who"])
def test_an_unloaded_room_comes_back_with_its_epoch_seq_and_history(chat, person, clock, how):
    server = chat()
    alice, bob = person(server, "alice"), person(server, "bob")
    visit(server, alice, "lobby", clock, "before the unload")
    epoch = server.rooms["lobby"].epoch
    clock.advance(IDLE + SWEEP)
    assert "lobby" not in server.rooms
    if how == "join":
        joined = join(server, bob, "lobby")
        assert (joined["epoch"], joined["seq"]) == (epoch, 3)
        texts = [event.get("text") for event in joined["history"]]
        assert texts == [None, "before the unload", None]
    elif how == "history":
        page = json.loads(server.history(bob, wire.History("lobby", None, None, "h")))
        assert page["epoch"] == epoch
        assert [event["seq"] for event in page["events"]] == [1, 2, 3]
    else:
        members = json.loads(server.who(bob, wire.Who("lobby", "w")))
        assert members["members"] == []
    room = server.rooms["lobby"]
    assert (room.epoch, room.committed_seq) == (epoch, 3)
    join(server, alice, "lobby")
    say(server, alice, "lobby", "after")
    clock.advance(0)
    assert server.rooms["lobby"].committed_seq == (6 if how == "join" else 5)  # bob joined too
    assert server.metrics.room_loads._value.get() == 1


def test_a_client_resuming_into_a_reloaded_room_gets_exactly_what_it_missed(chat, person, clock):
    server = chat()
    alice, bob = person(server, "alice"), person(server, "bob")
    joined = join(server, bob, "lobby")
    clock.advance(0)
    since = wire.Since(joined["epoch"], 1)
    server.disconnect(bob)
    visit(server, alice, "lobby", clock, "missed")
    clock.advance(IDLE + SWEEP)
    assert "lobby" not in server.rooms
    rejoined = join(server, person(server, "bob"), "lobby", since=since)
    assert rejoined["recovered"] is True
    assert [event["seq"] for event in rejoined["history"]] == [2, 3, 4, 5]


# -- max_rooms counts rooms in memory ----------------------------------------------------------


def test_at_max_rooms_the_longest_idle_room_makes_way(chat, person, clock):
    server = chat(max_rooms=2)
    alice = person(server, "alice")
    visit(server, alice, "first", clock, "one")
    clock.advance(1)
    visit(server, alice, "second", clock, "two")
    join(server, alice, "third")
    assert set(server.rooms) == {"second", "third"}
    # The evicted room is still there to be loaded, and evicts the next idle one.
    assert join(server, person(server, "bob"), "first")["seq"] == 3
    assert set(server.rooms) == {"first", "third"}


def test_at_max_rooms_with_no_idle_room_a_new_room_is_unavailable(chat, person, clock):
    server = chat(max_rooms=2)
    alice, bob = person(server, "alice"), person(server, "bob")
    join(server, alice, "first")
    join(server, bob, "second")
    clock.advance(0)
    carol = person(server, "carol")
    assert refusal_code(server.join, carol, wire.Join("third", None, None)) == errors.UNAVAILABLE
    assert (set(server.rooms), carol.rooms) == ({"first", "second"}, set())
    leave(server, bob, "second")
    clock.advance(0)
    assert join(server, carol, "third")["room"] == "third"
    assert set(server.rooms) == {"first", "third"}


def test_a_room_with_a_post_in_flight_is_not_idle(chat, person, clock):
    server = chat(max_rooms=1)
    alice = person(server, "alice")
    join(server, alice, "first")
    say(server, alice, "first", "in flight")
    leave(server, alice, "first")  # the presence and the message are not yet committed
    bob = person(server, "bob")
    assert refusal_code(server.join, bob, wire.Join("second", None, None)) == errors.UNAVAILABLE
    clock.advance(0)
    assert join(server, bob, "second")["room"] == "second"


def test_many_visitors_one_after_another_fit_in_a_few_rooms(chat, person, clock, transcript_dir):
    server = chat(max_rooms=3)
    for number in range(30):
        visitor = person(server, f"visitor{number}")
        visit(server, visitor, f"room{number}", clock, "hi")
        server.disconnect(visitor)
    assert len(server.rooms) <= 3
    assert len(list(transcript_dir.glob("room*.jsonl"))) == 30


# -- what unloading leaves on disk -------------------------------------------------------------


def test_a_room_that_only_saw_presence_leaves_no_transcript_once_unloaded(
    chat, person, clock, transcript_dir
):
    server = chat()
    alice = person(server, "alice")
    visit(server, alice, "quiet", clock)
    visit(server, alice, "spoken", clock, "words")
    assert (transcript_dir / "quiet.jsonl").exists()
    clock.advance(IDLE + SWEEP)
    assert not set(server.rooms) & {"quiet", "spoken"}
    assert not (transcript_dir / "quiet.jsonl").exists()
    assert len((transcript_dir / "spoken.jsonl").read_bytes().splitlines()) == 3
    # The quiet room is a new room next time: a new epoch, from seq 1.
    joined = join(server, alice, "quiet")
    clock.advance(0)
    assert (joined["seq"], server.rooms["quiet"].committed_seq) == (0, 1)


def test_a_reloaded_room_that_was_once_spoken_in_keeps_its_transcript(
    chat, person, clock, transcript_dir
):
    server = chat()
    alice = person(server, "alice")
    visit(server, alice, "spoken", clock, "words")
    clock.advance(IDLE + SWEEP)
    visit(server, alice, "spoken", clock)  # loaded again; only presence this time
    clock.advance(IDLE + SWEEP)
    assert "spoken" not in server.rooms
    assert len((transcript_dir / "spoken.jsonl").read_bytes().splitlines()) == 5


def test_idle_transcript_files_are_closed_and_reopened_on_the_next_write(chat, person, clock):
    server = chat()
    alice = person(server, "alice")
    for room in ("one", "two", "three"):
        join(server, alice, room)
        say(server, alice, room, f"in {room}")
    clock.advance(0)
    assert server.store.open_files == 3
    clock.advance(SWEEP)
    clock.advance(SWEEP)
    assert server.store.open_files == 0  # members still there: rooms in memory, no fds
    assert set(server.rooms) == {"one", "two", "three"}
    say(server, alice, "two", "again")
    clock.advance(0)
    assert server.store.open_files == 1
    lines = server.store.path_of("two").read_bytes().splitlines()
    assert [json.loads(line).get("text") for line in lines] == [None, "in two", "again"]


# -- the per-user creation budget --------------------------------------------------------------


def test_one_user_creating_rooms_is_stopped_at_the_budget(chat, person, clock, transcript_dir):
    server = chat(creations_per_user=5)
    mallory = person(server, "mallory")
    refused = 0
    for number in range(100):
        try:
            visit(server, mallory, f"spam{number}", clock, "x")
        except ChatError as error:
            assert error.code == errors.ROOM_BUDGET
            refused += 1
    assert refused == 95
    assert len(list(transcript_dir.glob("spam*.jsonl"))) == 5
    # Another user is not held to mallory's spending.
    assert join(server, person(server, "alice"), "fresh")["room"] == "fresh"


def test_the_budget_is_per_user_across_sessions_and_refills_with_time(chat, make_connection, clock):
    server = chat(creations_per_user=2)
    identity = Identity("mallory", "mallory", frozenset())
    tabs = []
    secret = None
    for _ in range(2):
        session, welcome = server.hello(
            make_connection(), identity, wire.Hello(name="mallory", ref=None, secret=secret)
        )
        secret = welcome["secret"]
        tabs.append(session)
    join(server, tabs[0], "a")
    join(server, tabs[1], "b")
    assert refusal_code(server.join, tabs[1], wire.Join("c", None, None)) == errors.ROOM_BUDGET
    assert refusal_code(server.join, tabs[0], wire.Join("c", None, None)) == errors.ROOM_BUDGET
    join(server, tabs[0], "b")  # joining a room that exists costs nothing
    clock.advance(3600 / 2 - 1)
    assert refusal_code(server.join, tabs[0], wire.Join("c", None, None)) == errors.ROOM_BUDGET
    clock.advance(1)  # one creation back every half hour
    assert join(server, tabs[0], "c")["room"] == "c"
    assert refusal_code(server.join, tabs[0], wire.Join("d", None, None)) == errors.ROOM_BUDGET


def test_declared_rooms_cost_no_budget(make_chat, person, clock):
    declared = {name: RoomPolicy() for name in ("help", "news", "lobby")}
    server = make_chat(rooms={"creations_per_user": 1, "declared": declared})
    alice = person(server, "alice")
    for room in ("help", "news", "lobby"):
        assert join(server, alice, room)["room"] == room
    assert join(server, alice, "mine")["room"] == "mine"
    assert refusal_code(server.join, alice, wire.Join("more", None, None)) == errors.ROOM_BUDGET


def test_a_room_refused_at_max_rooms_costs_no_creation_budget(chat, person, clock):
    server = chat(max_rooms=1, creations_per_user=2)
    alice, bob = person(server, "alice"), person(server, "bob")
    join(server, alice, "first")
    for _attempt in range(5):
        assert refusal_code(server.join, bob, wire.Join("other", None, None)) == (
            errors.UNAVAILABLE
        )
    leave(server, alice, "first")
    clock.advance(0)
    assert join(server, bob, "second")["room"] == "second"
    leave(server, bob, "second")
    clock.advance(0)
    assert join(server, bob, "third")["room"] == "third"  # both creations were still there
