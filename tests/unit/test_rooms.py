import gc
import json

import pytest

from chatd.events import Event, format_ts
from chatd.rooms import Room, message_draft, presence_draft
from chatd.wire import Since

EPOCH = "e1"


def make_room(memory_events: int = 100, retry_window: float = 60.0, **kwargs) -> Room:
    return Room("lobby", EPOCH, memory_events=memory_events, retry_window=retry_window, **kwargs)


def say(room: Room, text: str, sender: str = "alice", ts: float = 0.0) -> Event:
    event = room.sequence(message_draft(sender, sender, f"id-{text}", text, ts))
    room.commit(event)
    return event


def seqs(lines: list[bytes]) -> list[int]:
    return [json.loads(line)["seq"] for line in lines]


def filled_room(count: int, memory_events: int = 100) -> Room:
    room = make_room(memory_events=memory_events)
    for number in range(1, count + 1):
        say(room, f"m{number}")
    return room


# -- events ------------------------------------------------------------------------------------


def test_message_event_is_the_documented_json():
    room = make_room()
    event = room.sequence(
        message_draft("alice", "Alice A.", "c-17", "hi there", 1_795_545_506.4915)
    )
    assert json.loads(event.line) == {
        "type": "message",
        "room": "lobby",
        "epoch": EPOCH,
        "seq": 1,
        "ts": "2026-11-24T18:38:26.491Z",
        "from": "alice",
        "name": "Alice A.",
        "id": "c-17",
        "text": "hi there",
    }
    assert (event.seq, event.sender, event.client_id) == (1, "alice", "c-17")


def test_presence_event_is_the_documented_json():
    event = make_room().sequence(presence_draft("bob", "Bob B.", "leave", 0.0))
    assert json.loads(event.line) == {
        "type": "presence",
        "room": "lobby",
        "epoch": EPOCH,
        "seq": 1,
        "ts": "1970-01-01T00:00:00.000Z",
        "user": "bob",
        "name": "Bob B.",
        "event": "leave",
    }


def test_format_ts_is_utc_with_milliseconds_and_z():
    assert format_ts(0.0) == "1970-01-01T00:00:00.000Z"
    assert format_ts(1.9999) == "1970-01-01T00:00:01.999Z"


def test_seq_increases_by_one_per_event_of_any_kind():
    room = make_room()
    events = [
        room.sequence(presence_draft("alice", "alice", "join", 0.0)),
        room.sequence(message_draft("alice", "alice", "c1", "hi", 0.0)),
        room.sequence(presence_draft("alice", "alice", "leave", 0.0)),
    ]
    assert [event.seq for event in events] == [1, 2, 3]


def test_seq_is_given_at_creation_and_committed_seq_only_on_commit():
    room = make_room()
    event = room.sequence(message_draft("alice", "alice", "c1", "hi", 0.0))
    assert (room.last_seq, room.committed_seq) == (1, 0)
    assert room.latest(10) == []
    room.commit(event)
    assert (room.last_seq, room.committed_seq) == (1, 1)
    assert room.latest(10) == [event.line]


def test_event_from_line_round_trips():
    room = make_room()
    event = room.sequence(message_draft("alice", "alice", "c1", "hi", 12.345))
    assert Event.from_line(event.line) == event


def test_presence_event_from_line_has_the_user_as_sender_and_no_client_id():
    event = make_room().sequence(presence_draft("bob", "bob", "join", 0.0))
    assert (Event.from_line(event.line).sender, Event.from_line(event.line).client_id) == (
        "bob",
        None,
    )


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b'{"epoch": "e1", "ts": "1970-01-01T00:00:00.000Z"}',
        b'{"seq": 1, "ts": "1970-01-01T00:00:00.000Z"}',
        b'{"seq": 1, "epoch": "e1"}',
        b'{"seq": 0, "epoch": "e1", "ts": "1970-01-01T00:00:00.000Z"}',
        b'{"seq": true, "epoch": "e1", "ts": "1970-01-01T00:00:00.000Z"}',
        b'{"seq": "1", "epoch": "e1", "ts": "1970-01-01T00:00:00.000Z"}',
        b'{"seq": 1, "epoch": 7, "ts": "1970-01-01T00:00:00.000Z"}',
        b'{"seq": 1, "epoch": "e1", "ts": "yesterday"}',
        b'{"seq": 1, "epoch": "e1", "ts": 0}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_event_from_line_rejects_what_is_not_an_event(line):
    with pytest.raises(ValueError):
        Event.from_line(line)


# -- replay and resume -------------------------------------------------------------------------


def test_replay_without_since_is_the_latest_events_not_recovered():
    room = filled_room(10)
    history, recovered = room.replay(None, latest=3)
    assert (seqs(history), recovered) == ([8, 9, 10], False)


def test_replay_of_zero_latest_events_is_empty():
    assert filled_room(3).replay(None, latest=0) == ([], False)


def test_resume_gets_exactly_the_missed_events():
    room = filled_room(10)
    history, recovered = room.replay(Since(EPOCH, 6), latest=2)
    assert (seqs(history), recovered) == ([7, 8, 9, 10], True)


def test_resume_when_nothing_was_missed_is_empty_and_recovered():
    assert filled_room(4).replay(Since(EPOCH, 4), latest=2) == ([], True)


def test_resume_from_zero_in_a_room_that_never_evicted_gets_everything():
    history, recovered = filled_room(5).replay(Since(EPOCH, 0), latest=2)
    assert (seqs(history), recovered) == ([1, 2, 3, 4, 5], True)


def test_resume_in_another_epoch_is_not_recovered():
    history, recovered = filled_room(10).replay(Since("other", 6), latest=2)
    assert (seqs(history), recovered) == ([9, 10], False)


def test_resume_from_a_seq_in_the_future_is_not_recovered():
    history, recovered = filled_room(5).replay(Since(EPOCH, 6), latest=2)
    assert (seqs(history), recovered) == ([4, 5], False)


def test_resume_from_an_uncommitted_seq_is_not_recovered():
    room = filled_room(5)
    room.sequence(message_draft("alice", "alice", "late", "not yet on disk", 0.0))
    assert room.replay(Since(EPOCH, 6), latest=1)[1] is False


def test_resume_after_ring_eviction_needs_every_missed_event_in_memory():
    room = filled_room(8, memory_events=5)  # the ring holds 4..8
    history, recovered = room.replay(Since(EPOCH, 3), latest=2)
    assert (seqs(history), recovered) == ([4, 5, 6, 7, 8], True)
    history, recovered = room.replay(Since(EPOCH, 2), latest=2)
    assert (seqs(history), recovered) == ([7, 8], False)


def test_latest_is_bounded_by_the_ring():
    assert seqs(filled_room(8, memory_events=5).latest(50)) == [4, 5, 6, 7, 8]


# -- paging ------------------------------------------------------------------------------------


def test_before_returns_oldest_first_up_to_limit():
    assert seqs(filled_room(10).before(8, limit=3)) == [5, 6, 7]


def test_before_beyond_the_end_returns_the_latest():
    assert seqs(filled_room(10).before(10**9, limit=3)) == [8, 9, 10]


def test_before_the_first_event_is_empty():
    assert filled_room(3).before(1, limit=5) == []


def test_before_in_a_room_that_never_evicted_is_answered_from_memory():
    assert seqs(filled_room(5).before(4, limit=50)) == [1, 2, 3]


def test_before_says_none_when_older_events_are_only_in_the_transcript():
    room = filled_room(8, memory_events=5)  # the ring holds 4..8
    assert seqs(room.before(9, limit=5)) == [4, 5, 6, 7, 8]
    assert room.before(9, limit=6) is None
    assert room.before(5, limit=2) is None


# -- retries -----------------------------------------------------------------------------------


def test_retry_within_the_window_gets_the_original_seq():
    room = make_room(retry_window=60.0)
    event = room.sequence(message_draft("alice", "alice", "c1", "hi", 100.0))
    assert room.seq_of_retry("alice", "c1", now=160.0) == event.seq


def test_retry_after_the_window_is_forgotten():
    room = make_room(retry_window=60.0)
    room.sequence(message_draft("alice", "alice", "c1", "hi", 100.0))
    assert room.seq_of_retry("alice", "c1", now=160.001) is None


def test_expired_ids_are_forgotten_for_good_as_time_passes():
    room = make_room(retry_window=60.0)
    room.sequence(message_draft("alice", "alice", "old", "one", 0.0))
    room.sequence(message_draft("alice", "alice", "new", "two", 50.0))
    assert room.seq_of_retry("alice", "new", now=100.0) == 2
    assert room.seq_of_retry("alice", "old", now=100.0) is None
    assert room.seq_of_retry("alice", "old", now=0.0) is None


def test_retry_is_per_sender():
    room = make_room()
    room.sequence(message_draft("alice", "alice", "c1", "hi", 0.0))
    assert room.seq_of_retry("bob", "c1", now=0.0) is None


def test_abandoned_message_can_be_posted_again():
    room = make_room()
    event = room.sequence(message_draft("alice", "alice", "c1", "hi", 0.0))
    room.abandon([event])
    assert room.seq_of_retry("alice", "c1", now=0.0) is None


def test_abandoned_events_give_their_seqs_out_again_so_history_has_no_gap():
    room = filled_room(2)
    lost = [room.sequence(message_draft("alice", "alice", f"c{n}", "x", 0.0)) for n in (1, 2)]
    assert [event.seq for event in lost] == [3, 4]
    room.abandon(lost)
    assert (room.last_seq, room.committed_seq) == (2, 2)
    assert room.sequence(message_draft("alice", "alice", "c3", "y", 0.0)).seq == 3


# -- members: counted per user, fanned out per session -----------------------------------------


class FakeSession:
    def __init__(self, user: str, name: str | None = None):
        self.user = user
        self.name = name or user


def test_a_users_first_session_makes_it_a_member_and_its_last_ends_it():
    room = make_room()
    laptop, phone = FakeSession("alice", "Alice A."), FakeSession("alice", "Alice A.")
    assert [room.add(laptop), room.add(phone), room.add(phone)] == [True, False, False]
    assert (room.names(), list(room.sessions)) == ({"alice": "Alice A."}, [laptop, phone])
    assert [room.remove(laptop), room.remove(laptop)] == [False, False]
    assert room.names() == {"alice": "Alice A."}
    assert room.remove(phone) is True
    assert (room.names(), list(room.sessions)) == ({}, [])


def test_a_room_is_idle_only_with_no_session_and_nothing_pending():
    room = make_room()
    assert room.idle
    session = FakeSession("bob")
    room.add(session)
    assert not room.idle
    room.remove(session)
    room.pending = 1
    assert not room.idle
    room.pending = 0
    assert room.idle


def test_said_anything_is_false_until_a_non_presence_event_commits():
    room = make_room()
    room.commit(room.sequence(presence_draft("bob", "bob", "join", 0.0)))
    assert room.said_anything is False
    say(room, "hi")
    assert room.said_anything is True


def test_a_room_loaded_with_only_presence_in_its_recent_history_said_nothing():
    old = make_room()
    for change in ("join", "leave"):
        old.commit(old.sequence(presence_draft("bob", "bob", change, 0.0)))
    recent = [Event.from_line(line) for line in old.latest(10)]
    assert make_room(recent=recent, last_seq=2).said_anything is False
    # If older events fell out of the window, the room cannot know: it counts as said.
    assert make_room(recent=recent[1:], last_seq=2).said_anything is True


# -- a room rebuilt from its transcript ----------------------------------------------------------


def test_recovered_room_continues_its_seq_and_replays_its_recent_events():
    old = filled_room(6)
    recent = [Event.from_line(line) for line in old.latest(3)]
    room = make_room(recent=recent, last_seq=6)
    assert (room.last_seq, room.committed_seq) == (6, 6)
    assert room.sequence(presence_draft("bob", "bob", "join", 0.0)).seq == 7
    history, recovered = room.replay(Since(EPOCH, 3), latest=1)
    assert (seqs(history), recovered) == ([4, 5, 6], True)
    assert room.replay(Since(EPOCH, 2), latest=1)[1] is False


def test_recovered_room_answers_paging_beyond_its_ring_with_none():
    recent = [Event.from_line(line) for line in filled_room(6).latest(3)]
    room = make_room(recent=recent, last_seq=6)
    assert seqs(room.before(7, limit=3)) == [4, 5, 6]
    assert room.before(7, limit=4) is None


def test_recovered_room_remembers_message_ids_for_retries():
    old = make_room()
    old.commit(old.sequence(message_draft("alice", "alice", "c1", "hi", 10.0)))
    old.commit(old.sequence(presence_draft("alice", "alice", "leave", 11.0)))
    room = make_room(recent=[Event.from_line(line) for line in old.latest(10)], last_seq=2)
    assert room.seq_of_retry("alice", "c1", now=20.0) == 1


# -- the garbage collector ---------------------------------------------------------------------


def test_history_and_retry_ids_give_the_garbage_collector_nothing_to_walk():
    """Rooms hold up to `memory_events` events each for as long as they live: were each one a
    tracked object, every full collection would walk them all (issue 16)."""
    room = filled_room(10, memory_events=1000)
    gc.collect()
    before = len(gc.get_objects())
    for number in range(1000):
        say(room, f"more {number}")
    gc.collect()
    assert len(gc.get_objects()) - before < 10


def test_events_read_back_from_the_ring_are_the_committed_ones():
    room = make_room()
    committed = [say(room, f"m{number}") for number in range(1, 4)]
    assert room.events() == committed
    assert room.find(2) == committed[1]
    assert room.find(4) is None


def test_a_revised_event_replaces_the_one_with_its_seq_in_every_history():
    room = make_room()
    for number in range(1, 4):
        say(room, f"m{number}")
    redacted = Event.from_line(room.find(2).line.replace(b'"text":"m2"', b'"redacted":true'))
    assert room.revise(redacted)
    assert room.find(2) == redacted
    assert room.latest(3)[1] == redacted.line
    assert not room.revise(Event.from_line(redacted.line.replace(b'"seq":2', b'"seq":9')))
