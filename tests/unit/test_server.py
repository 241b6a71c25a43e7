import json
import os

import pytest

from chatd import errors, wire
from chatd.auth import Identity
from chatd.config import RoomPolicy
from chatd.errors import ChatError


def identify(name: str, display_name: str | None = None, roles=()) -> Identity:
    return Identity(name, display_name or name, frozenset(roles))


def open_hello(name: str, **fields) -> wire.Hello:
    return wire.Hello(name=name, ref=None, **fields)


def say(server, session, text: str, client_id: str | None = None, room: str = "lobby"):
    server.say(session, wire.Say(room=room, text=text, id=client_id or f"id-{text}"))


def leave(server, session, room: str = "lobby", ref: str | None = None) -> dict:
    return json.loads(server.leave(session, wire.Leave(room, ref)))


def transcript_lines(directory, room: str = "lobby") -> list[dict]:
    path = directory / f"{room}.jsonl"
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def texts(frames: list[dict]) -> list[str]:
    return [frame["text"] for frame in frames if frame["type"] == "message"]


def refusal_code(call, *args) -> str:
    with pytest.raises(ChatError) as caught:
        call(*args)
    return caught.value.code


# -- hello -------------------------------------------------------------------------------------


def test_hello_welcomes_a_user(make_chat, make_connection):
    server = make_chat()
    session, welcome = server.hello(make_connection(), identify("alice"), open_hello("alice"))
    assert (session.user, session.rooms, server.user_count) == ("alice", set(), 1)
    user_secret = welcome.pop("secret")
    assert welcome == {
        "user": "alice",
        "name": "alice",
        "roles": [],
        "session": session.id,
        "resume": f"{session.id}.{session.resume_secret}",
        "resumed": False,
    }
    assert len({session.id, session.resume_secret, user_secret}) == 3
    assert min(map(len, (session.id, session.resume_secret, user_secret))) >= 16


def test_each_welcome_has_its_own_session_and_resume_secrets(make_chat, make_connection):
    server = make_chat()
    welcomes = [
        server.hello(make_connection(), identify(name), open_hello(name))[1]
        for name in ("alice", "bob")
    ]
    assert len({w["session"] for w in welcomes}) == 2
    assert len({w["resume"] for w in welcomes}) == 2
    assert len({w["secret"] for w in welcomes}) == 2


def test_names_are_unique_ignoring_case(make_chat, make_connection, hello):
    server = make_chat()
    hello(server, make_connection(), "Alice")
    assert refusal_code(hello, server, make_connection(), "aLICE") == errors.NAME_TAKEN


def test_a_name_is_free_again_after_disconnect(make_chat, make_connection, hello):
    server = make_chat()
    server.disconnect(hello(server, make_connection(), "alice"))
    assert hello(server, make_connection(), "ALICE").user == "ALICE"
    assert server.user_count == 1


# -- join, leave, disconnect -------------------------------------------------------------------


def test_first_join_creates_the_room(make_chat, enter):
    server = make_chat()
    _session, _connection, joined = enter(server, "alice")
    assert joined["type"] == "joined"
    assert (joined["room"], joined["seq"], joined["members"]) == ("lobby", 0, ["alice"])
    assert joined["names"] == {"alice": "alice"}
    assert (joined["history"], joined["recovered"]) == ([], False)
    assert joined["epoch"] == server.rooms["lobby"].epoch


def test_the_joiners_presence_follows_as_a_live_event_after_the_commit(make_chat, enter, clock):
    server = make_chat()
    _session, connection, joined = enter(server, "alice")
    assert connection.frames == []
    clock.advance(0)
    [presence] = connection.frames
    assert presence == {
        "type": "presence",
        "room": "lobby",
        "epoch": joined["epoch"],
        "seq": joined["seq"] + 1,
        "ts": "1970-01-01T00:00:00.000Z",
        "user": "alice",
        "name": "alice",
        "event": "join",
    }


def test_members_see_others_join_and_leave(make_chat, enter, clock):
    server = make_chat()
    _alice, alice_connection, _joined = enter(server, "alice")
    bob, bob_connection, joined = enter(server, "bob")
    assert joined["members"] == ["alice", "bob"]
    assert joined["names"] == {"alice": "alice", "bob": "bob"}
    clock.advance(0)
    assert leave(server, bob, ref="l1") == {"type": "left", "room": "lobby", "ref": "l1"}
    clock.advance(0)
    presence = [(f["user"], f["event"]) for f in alice_connection.of_type("presence")]
    assert presence == [("alice", "join"), ("bob", "join"), ("bob", "leave")]
    assert [(f["user"], f["event"]) for f in bob_connection.frames] == [
        ("alice", "join"),
        ("bob", "join"),
    ]
    assert bob.rooms == set()


def test_joining_again_posts_no_second_presence(make_chat, enter, clock, transcript_dir):
    server = make_chat()
    session, connection, first = enter(server, "alice")
    clock.advance(0)
    again = json.loads(server.join(session, wire.Join("lobby", None, "j2")))
    clock.advance(0)
    assert (again["seq"], again["ref"]) == (first["seq"] + 1, "j2")
    assert len(connection.of_type("presence")) == 1
    assert len(transcript_lines(transcript_dir)) == 1


def test_disconnect_leaves_every_room(make_chat, enter, make_connection, hello, clock):
    server = make_chat()
    alice = hello(server, make_connection(), "alice")
    for room in ("one", "two"):
        server.join(alice, wire.Join(room, None, None))
    _bob, bob_one, _ = enter(server, "bob", room="one")
    _carol, carol_two, _ = enter(server, "carol", room="two")
    clock.advance(0)
    server.disconnect(alice)
    clock.advance(0)
    assert bob_one.frames[-1]["user"] == "alice" and bob_one.frames[-1]["event"] == "leave"
    assert carol_two.frames[-1]["user"] == "alice" and carol_two.frames[-1]["event"] == "leave"
    assert server.rooms["one"].members.keys() == {"bob"}
    assert server.user_count == 2


def test_leave_without_join_is_not_joined(make_chat, make_connection, hello):
    server = make_chat()
    session = hello(server, make_connection(), "alice")
    assert refusal_code(server.leave, session, wire.Leave("lobby", None)) == errors.NOT_JOINED


# -- say: commit, fan-out, ack -----------------------------------------------------------------


def test_a_message_reaches_every_member_once_then_the_sender_gets_its_ack(
    make_chat, enter, clock, prepared_frames
):
    server = make_chat()
    people = [enter(server, name) for name in ("alice", "bob", "carol")]
    clock.advance(0)
    connections = [connection for _session, connection, _joined in people]
    seen_before = [len(connection.frames) for connection in connections]
    say(server, people[0][0], "hi all", "c-17")
    clock.advance(0)
    new_frames = [c.frames[n:] for c, n in zip(connections, seen_before, strict=True)]
    message = {
        "type": "message",
        "room": "lobby",
        "epoch": server.rooms["lobby"].epoch,
        "seq": 4,
        "ts": "1970-01-01T00:00:00.000Z",
        "from": "alice",
        "name": "alice",
        "id": "c-17",
        "text": "hi all",
    }
    assert new_frames == [
        [message, {"type": "ack", "id": "c-17", "seq": 4}],
        [message],
        [message],
    ]
    # The event is prepared once, and that one frame is handed to every member.
    assert len(prepared_frames) == 2  # the three join events (one batch), then the message
    frames = prepared_frames[-1]
    assert [json.loads(line) for line in frames.lines] == [message]
    assert [connection.prepared[-1] is frames for connection in connections] == [True] * 3


def test_a_rooms_events_of_one_turn_go_to_each_member_in_one_write_with_the_senders_acks(
    make_chat, enter, clock
):
    server = make_chat()
    (alice, alice_connection, _), (bob, bob_connection, _) = (
        enter(server, "alice"),
        enter(server, "bob"),
    )
    clock.advance(0)
    sends_before = len(bob_connection.prepared)
    frames_before = len(alice_connection.frames)
    writes_before = alice_connection.writes, bob_connection.writes
    say(server, alice, "one", "a-1")
    say(server, bob, "two", "b-1")
    say(server, alice, "three", "a-2")
    clock.advance(0)
    [frames] = bob_connection.prepared[sends_before:]
    assert [json.loads(line)["text"] for line in frames.lines] == ["one", "two", "three"]
    assert alice_connection.prepared[-1] is frames
    assert [
        (frame["type"], frame.get("text"), frame.get("id"))
        for frame in alice_connection.frames[frames_before:]
    ] == [
        ("message", "one", "a-1"),
        ("message", "two", "b-1"),
        ("message", "three", "a-2"),
        ("ack", None, "a-1"),
        ("ack", None, "a-2"),
    ]
    assert bob_connection.frames[-1] == {
        "type": "ack",
        "id": "b-1",
        "seq": json.loads(frames.lines[1])["seq"],
    }
    assert (alice_connection.writes, bob_connection.writes) == tuple(n + 1 for n in writes_before)


def test_an_ack_for_a_sender_that_left_in_the_same_turn_still_arrives(make_chat, enter, clock):
    server = make_chat()
    alice, connection, _ = enter(server, "alice")
    enter(server, "bob")
    clock.advance(0)
    say(server, alice, "bye", "a-9")
    leave(server, alice)
    clock.advance(0)
    assert connection.frames[-1]["type"] == "ack" and connection.frames[-1]["id"] == "a-9"
    assert "bye" not in [frame.get("text") for frame in connection.frames]  # left before it


def test_each_room_of_a_turn_is_prepared_apart(make_chat, enter, clock, prepared_frames):
    server = make_chat()
    alice, both, _ = enter(server, "alice", room="lobby")
    server.join(alice, wire.Join(room="side", since=None, ref=None))
    _bob, lobby_only, _ = enter(server, "bob", room="lobby")
    clock.advance(0)
    before = len(prepared_frames)
    say(server, alice, "in the lobby", room="lobby")
    say(server, alice, "on the side", room="side")
    clock.advance(0)
    lobby, side = prepared_frames[before:]
    assert [json.loads(line)["room"] for line in lobby.lines + side.lines] == ["lobby", "side"]
    assert both.prepared[-2:] == [lobby, side]
    assert lobby_only.prepared[-1] is lobby


def test_nothing_is_sent_before_the_commit(make_chat, enter, clock, transcript_dir):
    server = make_chat()
    alice, connection, _ = enter(server, "alice")
    say(server, alice, "one")
    say(server, alice, "two")
    assert connection.frames == []
    assert transcript_lines(transcript_dir) == []
    clock.advance(0)
    assert texts(connection.frames) == ["one", "two"]
    assert [frame["seq"] for frame in connection.of_type("ack")] == [2, 3]


def test_the_transcript_line_is_written_before_any_member_sees_it_or_the_ack(
    make_chat, make_connection, hello, transcript_dir, clock
):
    class CheckingConnection(make_connection):
        """Looks at the transcript file at the moment each frame is handed over."""

        def __init__(self):
            super().__init__()
            self.on_disk_when_sent: list[bool] = []

        def _record(self, frame: dict) -> None:
            seq = frame.get("seq")
            self.on_disk_when_sent.append(
                seq in {line["seq"] for line in transcript_lines(transcript_dir)}
            )

        def send(self, payload):
            super().send(payload)
            self._record(self.frames[-1])

        def send_prepared(self, frames, replies=()):
            before = len(self.frames)
            super().send_prepared(frames, replies)
            for frame in self.frames[before:]:
                self._record(frame)

    server = make_chat()
    connection = CheckingConnection()
    session = hello(server, connection, "alice")
    server.join(session, wire.Join("lobby", None, None))
    say(server, session, "durable")
    clock.advance(0)
    assert [frame["type"] for frame in connection.frames] == ["presence", "message", "ack"]
    assert connection.on_disk_when_sent == [True, True, True]


def test_from_and_name_are_the_sessions_user_and_display_name(
    make_chat, enter, clock, transcript_dir
):
    server = make_chat()
    alice, _connection, _ = enter(
        server, "alice", identity=identify("alice", display_name="Alice Liddell")
    )
    say(server, alice, "me")
    clock.advance(0)
    line = transcript_lines(transcript_dir)[-1]
    assert (line["from"], line["name"]) == ("alice", "Alice Liddell")


def test_say_in_a_room_not_joined_is_refused(make_chat, enter):
    server = make_chat()
    alice, _connection, _ = enter(server, "alice", room="lobby")
    enter(server, "bob", room="other")
    request = wire.Say(room="other", text="hi", id="c1")
    assert refusal_code(server.say, alice, request) == errors.NOT_JOINED


def test_a_joiner_during_a_pending_batch_misses_nothing_and_gets_nothing_twice(
    make_chat, enter, clock
):
    server = make_chat()
    alice, _connection, _ = enter(server, "alice")
    clock.advance(0)
    say(server, alice, "in flight")
    _bob, bob_connection, joined = enter(server, "bob")
    clock.advance(0)
    history = [event["seq"] for event in joined["history"]]
    live = [frame["seq"] for frame in bob_connection.frames if "seq" in frame]
    assert history + live == list(range(1, server.rooms["lobby"].committed_seq + 1))
    assert joined["seq"] == history[-1]


def test_fsync_batch_syncs_the_transcript_before_the_ack(make_chat, enter, clock, monkeypatch):
    synced: list[tuple[int, int]] = []  # (fd, acks sent so far)
    real_fsync = os.fsync
    server = make_chat(transcripts={"fsync": "batch"})
    alice, connection, _ = enter(server, "alice")

    def recording_fsync(fd):
        synced.append((fd, len(connection.of_type("ack"))))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    say(server, alice, "sync me")
    clock.advance(0)
    assert len(synced) == 1
    assert synced[0][1] == 0
    assert connection.of_type("ack")


def test_without_fsync_nothing_is_synced(make_chat, enter, clock, monkeypatch):
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    server = make_chat(transcripts={"fsync": "no"})
    alice, connection, _ = enter(server, "alice")
    say(server, alice, "no sync")
    clock.advance(0)
    assert connection.of_type("ack")
    assert synced == []


def test_a_failed_write_is_reported_unavailable_and_nothing_is_delivered(
    make_chat, enter, clock, transcript_dir, limited_file_size
):
    server = make_chat()
    alice, alice_connection, _ = enter(server, "alice")
    _bob, bob_connection, _ = enter(server, "bob")
    clock.advance(0)
    size = (transcript_dir / "lobby.jsonl").stat().st_size
    say(server, alice, "lost", "c1")
    limited_file_size(size + 10)
    clock.advance(0)
    limited_file_size(None)
    assert alice_connection.frames[-1] == {
        "type": "error",
        "code": errors.UNAVAILABLE,
        "message": "the message could not be stored; retry later",
        "ref": "c1",
    }
    assert texts(bob_connection.frames) == []
    assert (transcript_dir / "lobby.jsonl").stat().st_size == size
    # The retry is posted anew once the disk takes writes again, with the seq the lost one
    # had: nobody ever saw that seq, so the history has no gap.
    say(server, alice, "lost", "c1")
    clock.advance(0)
    assert texts(bob_connection.frames) == ["lost"]
    assert alice_connection.frames[-1] == {"type": "ack", "id": "c1", "seq": 3}
    assert [line["seq"] for line in transcript_lines(transcript_dir)] == [1, 2, 3]
    assert [line.get("text") for line in transcript_lines(transcript_dir)].count("lost") == 1


def test_a_join_whose_presence_cannot_be_stored_is_undone_and_reported(
    make_chat, enter, make_connection, hello, clock, transcript_dir, limited_file_size
):
    server = make_chat()
    _alice, alice_connection, _ = enter(server, "alice")
    clock.advance(0)
    size = (transcript_dir / "lobby.jsonl").stat().st_size
    bob = hello(server, bob_connection := make_connection(), "bob")
    server.join(bob, wire.Join("lobby", None, "j1"))
    limited_file_size(size + 10)
    clock.advance(0)
    limited_file_size(None)
    assert bob_connection.frames[-1]["type"] == "error"
    assert (bob_connection.frames[-1]["code"], bob_connection.frames[-1]["ref"]) == (
        errors.UNAVAILABLE,
        "j1",
    )
    assert (bob.rooms, list(server.rooms["lobby"].members)) == (set(), ["alice"])
    assert alice_connection.of_type("presence")[-1]["user"] == "alice"
    # Joining again works, and the presence event takes the seq the lost one had.
    joined = json.loads(server.join(bob, wire.Join("lobby", None, "j2")))
    clock.advance(0)
    assert joined["members"] == ["alice", "bob"]
    assert [line["seq"] for line in transcript_lines(transcript_dir)] == [1, 2]
    assert alice_connection.frames[-1]["user"] == "bob"


# -- retries -----------------------------------------------------------------------------------


def test_a_retry_in_the_same_batch_is_acked_with_the_original_seq_and_sent_once(
    make_chat, enter, clock, transcript_dir
):
    server = make_chat()
    alice, connection, _ = enter(server, "alice")
    _bob, bob_connection, _ = enter(server, "bob")
    say(server, alice, "once", "c1")
    say(server, alice, "once", "c1")
    clock.advance(0)
    acks = connection.of_type("ack")
    assert [ack["seq"] for ack in acks] == [3, 3]
    assert texts(connection.frames) == texts(bob_connection.frames) == ["once"]
    assert [line.get("id") for line in transcript_lines(transcript_dir)].count("c1") == 1


def test_a_retry_in_a_later_batch_is_acked_and_not_broadcast_again(
    make_chat, enter, clock, transcript_dir
):
    server = make_chat(limits={"retry_window": 300.0})
    alice, connection, _ = enter(server, "alice")
    _bob, bob_connection, _ = enter(server, "bob")
    say(server, alice, "once", "c1")
    clock.advance(0)
    clock.advance(299)
    bob_frames = len(bob_connection.frames)
    say(server, alice, "once", "c1")
    clock.advance(0)
    assert connection.frames[-1] == {"type": "ack", "id": "c1", "seq": 3}
    assert len(bob_connection.frames) == bob_frames
    assert texts(connection.frames) == ["once"]
    assert len(transcript_lines(transcript_dir)) == 3


def test_a_retry_after_the_window_is_a_new_message(make_chat, enter, clock):
    server = make_chat(limits={"retry_window": 300.0})
    alice, connection, _ = enter(server, "alice")
    say(server, alice, "again", "c1")
    clock.advance(0)
    clock.advance(300.5)
    say(server, alice, "again", "c1")
    clock.advance(0)
    assert [ack["seq"] for ack in connection.of_type("ack")] == [2, 3]
    assert texts(connection.frames) == ["again", "again"]


def test_the_same_id_from_another_sender_is_another_message(make_chat, enter, clock):
    server = make_chat()
    alice, alice_connection, _ = enter(server, "alice")
    bob, _bob_connection, _ = enter(server, "bob")
    say(server, alice, "from alice", "c1")
    say(server, bob, "from bob", "c1")
    clock.advance(0)
    assert texts(alice_connection.frames) == ["from alice", "from bob"]


def test_a_retry_after_a_restart_is_acked_with_the_original_seq(
    make_chat, enter, clock, transcript_dir
):
    before = make_chat()
    alice, _connection, _ = enter(before, "alice")
    say(before, alice, "survives", "c1")
    clock.advance(0)
    original = transcript_lines(transcript_dir)[-1]["seq"]
    before.shutdown()
    clock.advance(10)

    after = make_chat()
    alice, connection, _ = enter(after, "alice")
    clock.advance(0)
    lines = len(transcript_lines(transcript_dir))
    say(after, alice, "survives", "c1")
    clock.advance(0)
    assert connection.frames[-1] == {"type": "ack", "id": "c1", "seq": original}
    assert texts(connection.frames) == []
    assert len(transcript_lines(transcript_dir)) == lines


# -- resume ------------------------------------------------------------------------------------


def test_resume_after_a_restart_gets_exactly_the_missed_events(
    make_chat, enter, make_connection, hello, clock, transcript_dir
):
    before = make_chat()
    alice, _alice_connection, _ = enter(before, "alice")
    bob, bob_connection, _ = enter(before, "bob")
    say(before, alice, "seen")
    clock.advance(0)
    last_seen = bob_connection.frames[-1]["seq"]
    epoch = bob_connection.frames[-1]["epoch"]
    before.disconnect(bob)
    for text in ("missed 1", "missed 2"):
        say(before, alice, text)
    clock.advance(0)
    expected = [line for line in transcript_lines(transcript_dir) if line["seq"] > last_seen]
    # No shutdown: the daemon died; the transcript is all that is left.

    after = make_chat()
    _bob, _connection, joined = enter(after, "bob", since=wire.Since(epoch, last_seen))
    assert joined["recovered"] is True
    assert joined["epoch"] == epoch
    assert joined["history"] == expected
    assert [event.get("text") for event in expected] == [None, "missed 1", "missed 2"]
    assert joined["seq"] == expected[-1]["seq"]


def test_resume_into_a_new_epoch_gets_the_latest_events(make_chat, enter, clock, transcript_dir):
    before = make_chat()
    alice, connection, _ = enter(before, "alice")
    say(before, alice, "old history")
    clock.advance(0)
    old_epoch = connection.of_type("message")[0]["epoch"]
    before.shutdown()
    (transcript_dir / "lobby.jsonl").unlink()

    after = make_chat(history={"replay_events": 5})
    _bob, _connection, joined = enter(after, "bob", since=wire.Since(old_epoch, 2))
    assert joined["epoch"] != old_epoch
    assert (joined["recovered"], joined["history"], joined["seq"]) == (False, [], 0)


def test_resume_from_a_seq_the_room_never_reached_is_not_recovered(make_chat, enter, clock):
    server = make_chat(history={"replay_events": 1})
    _alice, _connection, joined = enter(server, "alice")
    clock.advance(0)
    epoch = joined["epoch"]
    _bob, _c, joined = enter(server, "bob", since=wire.Since(epoch, 99))
    assert joined["recovered"] is False
    assert [event["seq"] for event in joined["history"]] == [1]


# -- who and history ---------------------------------------------------------------------------


def test_who_lists_the_members(make_chat, enter):
    server = make_chat()
    alice, _c, _j = enter(server, "alice")
    enter(server, "bob")
    reply = json.loads(server.who(alice, wire.Who("lobby", "w1")))
    assert reply == {
        "type": "members",
        "room": "lobby",
        "members": ["alice", "bob"],
        "names": {"alice": "alice", "bob": "bob"},
        "ref": "w1",
    }


def test_who_and_history_of_an_unknown_room(make_chat, make_connection, hello):
    server = make_chat()
    alice = hello(server, make_connection(), "alice")
    assert refusal_code(server.who, alice, wire.Who("nowhere", None)) == errors.UNKNOWN_ROOM
    request = wire.History("nowhere", None, None, None)
    assert refusal_code(server.history, alice, request) == errors.UNKNOWN_ROOM


def history_page(server, session, before=None, limit=None) -> dict:
    return json.loads(server.history(session, wire.History("lobby", before, limit, "h")))


def posted_room(make_chat, enter, clock, count: int, **history):
    server = make_chat(history=history)
    alice, _connection, _ = enter(server, "alice")
    for number in range(1, count + 1):
        say(server, alice, f"m{number}")
    clock.advance(0)
    return server, alice


def test_history_defaults_to_the_latest_events(make_chat, enter, clock):
    server, alice = posted_room(make_chat, enter, clock, 10, replay_events=4)
    page = history_page(server, alice)
    assert [event["seq"] for event in page["events"]] == [8, 9, 10, 11]
    assert (page["more"], page["ref"], page["epoch"]) == (
        True,
        "h",
        server.rooms["lobby"].epoch,
    )


def test_history_limit_is_cut_to_page_limit(make_chat, enter, clock):
    server, alice = posted_room(make_chat, enter, clock, 10, page_limit=3)
    page = history_page(server, alice, before=11, limit=50)
    assert [event["seq"] for event in page["events"]] == [8, 9, 10]


def test_history_reaching_the_first_event_has_no_more(make_chat, enter, clock):
    server, alice = posted_room(make_chat, enter, clock, 3)
    page = history_page(server, alice, before=3, limit=10)
    assert ([event["seq"] for event in page["events"]], page["more"]) == ([1, 2], False)


def test_history_pages_back_past_memory_into_the_transcript(make_chat, enter, clock):
    server, alice = posted_room(make_chat, enter, clock, 30, memory_events=5, replay_events=5)
    seen, before, pages = [], None, 0
    while True:
        page = history_page(server, alice, before=before, limit=4)
        pages += 1
        seen[:0] = page["events"]
        if not page["more"]:
            break
        before = page["events"][0]["seq"]
    assert [event["seq"] for event in seen] == list(range(1, 32))
    assert [event.get("text") for event in seen[1:]] == [f"m{n}" for n in range(1, 31)]
    assert pages == 8


def test_history_after_a_restart_reads_the_transcript(make_chat, enter, clock):
    before, _alice = posted_room(make_chat, enter, clock, 12, memory_events=3)
    before.shutdown()
    after = make_chat(history={"memory_events": 3})
    bob, _connection, _ = enter(after, "bob")
    page = history_page(after, bob, before=6, limit=3)
    assert [event.get("text") for event in page["events"]] == ["m2", "m3", "m4"]


# -- shutdown ----------------------------------------------------------------------------------


def test_shutdown_commits_what_is_pending(make_chat, enter, transcript_dir):
    server = make_chat()
    alice, connection, _ = enter(server, "alice")
    say(server, alice, "last words", "c9")
    server.shutdown()
    assert connection.frames[-1] == {"type": "ack", "id": "c9", "seq": 2}
    assert transcript_lines(transcript_dir)[-1]["text"] == "last words"


def test_start_up_loads_no_room_and_each_is_loaded_with_its_history_when_used(
    make_chat, enter, make_connection, hello, clock
):
    before = make_chat()
    for room in ("one", "two"):
        user, _connection, _ = enter(before, f"user-{room}", room=room)
        say(before, user, f"said in {room}", room=room)
    clock.advance(0)
    epochs = {name: room.epoch for name, room in before.rooms.items()}
    before.shutdown()
    after = make_chat()
    assert after.rooms == {}
    carol = hello(after, make_connection(), "carol")
    members = json.loads(after.who(carol, wire.Who("one", "w")))
    assert members["members"] == []
    assert list(after.rooms) == ["one"]
    _dave, _connection, joined = enter(after, "dave", room="two")
    assert {name: room.epoch for name, room in after.rooms.items()} == epochs
    assert (joined["epoch"], joined["seq"]) == (epochs["two"], 2)
    assert [event.get("text") for event in joined["history"]] == [None, "said in two"]


def test_resume_across_an_unreadable_transcript_line_is_not_recovered(
    make_chat, enter, clock, transcript_dir
):
    before = make_chat()
    alice, connection, _ = enter(before, "alice")
    for text in ("one", "two", "three"):
        say(before, alice, text)
    clock.advance(0)
    epoch = connection.frames[0]["epoch"]
    before.shutdown()
    path = transcript_dir / "lobby.jsonl"
    lines = path.read_bytes().splitlines()
    lines[2] = b"{corrupted"  # seq 3, "two", delivered before the restart
    path.write_bytes(b"\n".join(lines) + b"\n")

    after = make_chat()
    _bob, _connection, joined = enter(after, "bob", since=wire.Since(epoch, 1))
    assert joined["recovered"] is False


def test_a_senders_acks_keep_the_order_of_its_requests_across_rooms_and_retries(
    make_chat, enter, clock
):
    server = make_chat()
    alice, connection, _ = enter(server, "alice", room="lobby")
    server.join(alice, wire.Join(room="side", since=None, ref=None))
    clock.advance(0)

    def acks_of_turn(*says: tuple[str, str]) -> list[str]:
        before = len(connection.frames)
        for room, client_id in says:
            say(server, alice, f"text of {client_id}", client_id, room=room)
        clock.advance(0)
        return [frame["id"] for frame in connection.frames[before:] if frame["type"] == "ack"]

    assert acks_of_turn(("lobby", "a-1"), ("side", "s-1"), ("lobby", "a-2")) == [
        "a-1",
        "s-1",
        "a-2",
    ]
    # a-1 again is a retry (acked without an event), then a new message
    assert acks_of_turn(("lobby", "a-1"), ("lobby", "a-3")) == ["a-1", "a-3"]


# -- permissions -------------------------------------------------------------------------------

STAFF_ONLY = RoomPolicy(join=("mod",), post=("mod",))
ANNOUNCEMENTS = RoomPolicy(join=("*",), post=("mod",), replay=False)


def test_a_declared_room_admits_only_its_roles(make_chat, make_connection, hello):
    server = make_chat(rooms={"declared": {"staff": STAFF_ONLY}})
    mod = hello(server, make_connection(), "mo", identity=identify("mo", roles=["mod"]))
    guest = hello(server, make_connection(), "guest")
    assert json.loads(server.join(mod, wire.Join("staff", None, None)))["members"] == ["mo"]
    assert refusal_code(server.join, guest, wire.Join("staff", None, None)) == errors.FORBIDDEN
    assert refusal_code(server.who, guest, wire.Who("staff", None)) == errors.FORBIDDEN
    history = wire.History("staff", None, None, None)
    assert refusal_code(server.history, guest, history) == errors.FORBIDDEN
    assert guest.rooms == set()


def test_only_the_post_roles_may_say_in_a_declared_room(
    make_chat, make_connection, hello, clock, transcript_dir
):
    server = make_chat(rooms={"declared": {"news": ANNOUNCEMENTS}})
    mod = hello(server, make_connection(), "mo", identity=identify("mo", roles=["mod"]))
    guest = hello(server, make_connection(), "guest")
    for session in (mod, guest):
        server.join(session, wire.Join("news", None, None))
    request = wire.Say("news", "hello", "g1")
    assert refusal_code(server.say, guest, request) == errors.FORBIDDEN
    say(server, mod, "news!", room="news")
    clock.advance(0)
    assert texts(transcript_lines(transcript_dir, "news")) == ["news!"]


def test_a_room_without_replay_sends_no_history_and_refuses_paging(
    make_chat, make_connection, hello, clock
):
    server = make_chat(rooms={"declared": {"news": ANNOUNCEMENTS}})
    mod = hello(server, make_connection(), "mo", identity=identify("mo", roles=["mod"]))
    server.join(mod, wire.Join("news", None, None))
    say(server, mod, "old news", room="news")
    clock.advance(0)
    guest = hello(server, make_connection(), "guest")
    joined = json.loads(server.join(guest, wire.Join("news", None, None)))
    assert (joined["history"], joined["recovered"], joined["seq"]) == ([], False, 2)
    history = wire.History("news", None, None, None)
    assert refusal_code(server.history, guest, history) == errors.FORBIDDEN


def test_without_allow_create_only_declared_or_existing_rooms_can_be_joined(
    make_chat, make_connection, hello
):
    server = make_chat(rooms={"allow_create": False, "declared": {"lobby": RoomPolicy()}})
    alice = hello(server, make_connection(), "alice")
    assert json.loads(server.join(alice, wire.Join("lobby", None, None)))["room"] == "lobby"
    assert refusal_code(server.join, alice, wire.Join("newroom", None, None)) == errors.FORBIDDEN
    assert set(server.rooms) == {"lobby"}


def test_a_session_may_join_at_most_max_rooms_per_connection(make_chat, make_connection, hello):
    server = make_chat(limits={"max_rooms_per_connection": 2})
    alice = hello(server, make_connection(), "alice")
    for room in ("one", "two", "two"):  # joining a joined room again is no new room
        server.join(alice, wire.Join(room, None, None))
    assert refusal_code(server.join, alice, wire.Join("three", None, None)) == errors.TOO_MANY_ROOMS
    leave(server, alice, "one")
    assert json.loads(server.join(alice, wire.Join("three", None, None)))["room"] == "three"
