"""Read markers (chatd/read_markers.py): per user, never backwards, told to the room once
stored, in `joined`, kept in a journal written once per turn, loaded after a restart,
compacted, erased, and `unavailable` when the journal cannot be written."""

from __future__ import annotations

import json
import os

import pytest

from chatd import errors, wire
from chatd.auth import OpenAuthenticator
from chatd.erasure import erase_files
from chatd.errors import ChatError
from chatd.read_markers import JOURNAL


def welcome(server, connection, name: str, room: str = "lobby", secret: str | None = None):
    """A session of `name` (a further one with the user's `secret`) joined to `room`: the
    session, the user's secret and the `joined` reply."""
    hello = wire.Hello(name=name, ref=None, secret=secret)
    session, fields = server.hello(connection, OpenAuthenticator().identify(hello), hello)
    joined = json.loads(server.join(session, wire.Join(room=room, since=None, ref=None)))
    return session, fields["secret"], joined


def read(server, session, seq: int, room: str = "lobby", ref: str | None = None):
    reply = server.handle(session, wire.Read(room=room, seq=seq, ref=ref))
    return None if reply is None else json.loads(reply)


def say(server, session, text: str, room: str = "lobby") -> None:
    server.handle(session, wire.Say(room=room, text=text, id=f"id-{text}"))


def markers_told(connection) -> list[tuple[str, int]]:
    return [(frame["user"], frame["seq"]) for frame in connection.of_type("read")]


def journal(transcript_dir) -> list[dict]:
    path = transcript_dir / JOURNAL
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


@pytest.fixture
def lobby(make_chat, make_connection, clock):
    """alice and bob in the lobby and five messages (seqs 3-7): the server and each one's
    (session, connection, secret)."""
    server = make_chat()
    people = {}
    for name in ("alice", "bob"):
        connection = make_connection()
        session, secret, _joined = welcome(server, connection, name)
        people[name] = (session, connection, secret)
    for number in range(5):
        say(server, people["bob"][0], f"m{number}")
    clock.advance(0)
    assert server.rooms["lobby"].committed_seq == 7
    return server, people


def test_a_marker_is_told_to_every_session_in_the_room_once_it_is_stored(
    lobby, clock, transcript_dir, prepared_frames
):
    server, people = lobby
    (alice, alice_connection, _), (_, bob, _) = people.values()
    assert read(server, alice, 5, ref="r1") is None
    assert markers_told(bob) == [] and journal(transcript_dir) == []
    clock.advance(0)
    frame = {"type": "read", "room": "lobby", "user": "alice", "seq": 5}
    assert bob.frames[-1] == frame and alice_connection.frames[-1] == frame
    assert bob.prepared[-1] is alice_connection.prepared[-1] is prepared_frames[-1]
    [line] = journal(transcript_dir)
    epoch = server.rooms["lobby"].epoch
    assert {k: line[k] for k in ("room", "user", "epoch", "seq")} == {
        "room": "lobby",
        "user": "alice",
        "epoch": epoch,
        "seq": 5,
    }
    assert server.read_markers.of("lobby", "alice", epoch) == 5
    # Nothing of it in the room's transcript.
    assert b'"read"' not in (transcript_dir / "lobby.jsonl").read_bytes()


def test_a_marker_never_moves_back_and_is_shared_by_the_users_sessions(
    lobby, clock, make_connection, transcript_dir
):
    server, people = lobby
    (alice, _, secret), (_, bob, _) = people.values()
    tablet, _, _ = welcome(server, make_connection(), "alice", secret=secret)
    read(server, alice, 6)
    clock.advance(0)
    same = {"type": "read", "room": "lobby", "user": "alice", "seq": 6}
    # A lower or equal seq, from any of her sessions: answered at once with the marker as it
    # is, to that session only; nothing written, nothing told.
    assert read(server, tablet, 4) == same
    assert read(server, alice, 6) == same
    clock.advance(0)
    assert markers_told(bob) == [("alice", 6)]
    assert len(journal(transcript_dir)) == 1
    # Within one turn, the highest wins and is written once.
    read(server, tablet, 7)
    read(server, alice, 6)
    clock.advance(0)
    assert markers_told(bob) == [("alice", 6), ("alice", 7)]
    assert [line["seq"] for line in journal(transcript_dir)] == [6, 7]


def test_a_seq_past_the_latest_event_counts_as_the_latest(lobby, clock):
    server, people = lobby
    (alice, _, _), (_, bob, _) = people.values()
    read(server, alice, 10_000)
    clock.advance(0)
    assert markers_told(bob) == [("alice", 7)]


def test_only_a_session_in_the_room_may_read_it(lobby):
    server, people = lobby
    with pytest.raises(ChatError) as refused:
        read(server, people["alice"][0], 3, room="elsewhere", ref="r9")
    assert refused.value.code == errors.NOT_JOINED


def test_joined_carries_the_members_markers_and_the_joiners_own(
    lobby, clock, make_connection, make_chat
):
    server, people = lobby
    (alice, _, _), (bob, _, _) = people.values()
    carol_connection = make_connection()
    carol, _, joined = welcome(server, carol_connection, "carol")
    assert joined["read"] == {}
    read(server, alice, 7)
    read(server, bob, 4)
    read(server, carol, 5)
    clock.advance(0)
    server.handle(bob, wire.Leave(room="lobby", ref=None))  # no member now: not listed
    server.disconnect(carol)
    clock.advance(0)
    _, _, joined = welcome(server, make_connection(), "carol")
    assert joined["read"] == {"alice": 7, "carol": 5}


def test_the_markers_of_a_turn_are_one_write_to_the_journal(
    make_chat, make_connection, clock, transcript_dir, monkeypatch
):
    server = make_chat(transcripts={"fsync": "batch"})
    sessions = [welcome(server, make_connection(), name)[0] for name in ("a", "b", "c")]
    clock.advance(0)
    writes, syncs = [], []
    real_write, real_fsync = os.write, os.fsync

    def path_of(fd: int) -> str:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))

    def write(fd, data):
        writes.append(path_of(fd))
        return real_write(fd, data)

    def fsync(fd):
        syncs.append(path_of(fd))
        return real_fsync(fd)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "fsync", fsync)
    for session in sessions:
        read(server, session, 3)
    clock.advance(0)
    assert (writes.count(JOURNAL), syncs.count(JOURNAL)) == (1, 1)
    assert [line["user"] for line in journal(transcript_dir)] == ["a", "b", "c"]


def test_markers_are_loaded_after_a_restart(lobby, clock, make_chat, make_connection):
    server, people = lobby
    (alice, _, _), (bob, _, _) = people.values()
    epoch = server.rooms["lobby"].epoch
    read(server, alice, 4)
    clock.advance(0)
    read(server, alice, 6)
    read(server, bob, 3)
    server.shutdown()  # writes what is pending
    again = make_chat()
    assert again.read_markers.of("lobby", "alice", epoch) == 6
    assert again.read_markers.of("lobby", "bob", epoch) == 3
    assert again.read_markers.of("lobby", "alice", "0" * 16) == 0  # another history
    _, _, joined = welcome(again, make_connection(), "alice")
    assert joined["read"] == {"alice": 6}


def test_a_torn_last_line_is_cut_off_and_the_journal_goes_on(
    lobby, clock, make_chat, make_connection, transcript_dir, log_events
):
    server, people = lobby
    alice = people["alice"][0]
    epoch = server.rooms["lobby"].epoch
    read(server, alice, 5)
    clock.advance(0)
    server.shutdown()
    path = transcript_dir / JOURNAL
    whole = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(b'{"room":"lobby","user":"bob","epo')
    again = make_chat()
    assert path.read_bytes() == whole
    assert again.read_markers.of("lobby", "alice", epoch) == 5
    assert again.read_markers.of("lobby", "bob", epoch) == 0
    assert any("torn last line" in event.get("log_format", "") for event in log_events)
    bob, _, _ = welcome(again, make_connection(), "bob")
    read(again, bob, 4)
    clock.advance(0)
    assert [(line["user"], line["seq"]) for line in journal(transcript_dir)] == [
        ("alice", 5),
        ("bob", 4),
    ]


def test_the_journal_is_compacted_to_one_line_per_marker(lobby, clock, make_chat, transcript_dir):
    server, people = lobby
    (alice, _, _), (bob, _, _) = people.values()
    epoch = server.rooms["lobby"].epoch
    server.read_markers.compact_lines = 4
    for seq in range(3, 8):
        read(server, alice, seq)
        clock.advance(0)
    # Five lines for one marker: past max(4, 2 * 1), rewritten to one.
    assert [(line["user"], line["seq"]) for line in journal(transcript_dir)] == [("alice", 7)]
    read(server, bob, 4)
    clock.advance(0)
    assert [(line["user"], line["seq"]) for line in journal(transcript_dir)] == [
        ("alice", 7),
        ("bob", 4),
    ]
    server.shutdown()
    again = make_chat()
    assert again.read_markers.of("lobby", "alice", epoch) == 7
    assert again.read_markers.of("lobby", "bob", epoch) == 4


def test_a_failed_write_tells_the_reader_unavailable_and_moves_nothing(
    lobby, clock, transcript_dir, limited_file_size, log_events
):
    server, people = lobby
    (alice, alice_connection, _), (_, bob, _) = people.values()
    epoch = server.rooms["lobby"].epoch
    read(server, alice, 3)
    clock.advance(0)
    size = (transcript_dir / JOURNAL).stat().st_size
    for seq in (5, 6):
        read(server, alice, seq, ref=f"r{seq}")
        limited_file_size(size + 10)
        clock.advance(0)
        limited_file_size(None)
        assert alice_connection.frames[-1] == {
            "type": "error",
            "code": errors.UNAVAILABLE,
            "message": "the read marker could not be stored; retry later",
            "ref": f"r{seq}",
        }
    assert (transcript_dir / JOURNAL).stat().st_size == size  # no torn line left
    assert markers_told(bob) == [("alice", 3)]
    assert server.read_markers.of("lobby", "alice", epoch) == 3
    critical = [e for e in log_events if "cannot write the read markers" in e.get("log_format", "")]
    assert len(critical) == 1  # once per cause
    read(server, alice, 6, ref="r7")
    clock.advance(0)
    assert markers_told(bob) == [("alice", 3), ("alice", 6)]
    assert server.read_markers.of("lobby", "alice", epoch) == 6


def test_erasure_drops_the_users_markers(lobby, clock, make_chat, transcript_dir):
    server, people = lobby
    (alice, _, _), (bob, _, _) = people.values()
    epoch = server.rooms["lobby"].epoch
    read(server, alice, 5)
    read(server, bob, 4)
    clock.advance(0)
    report = server.erasure.erase("alice").result
    assert report["read_markers"] == 1
    assert server.read_markers.of("lobby", "alice", epoch) == 0
    assert [line["user"] for line in journal(transcript_dir)] == ["bob"]
    # With no daemon running, the tool rewrites the journal itself.
    read(server, alice, 6)
    server.shutdown()
    assert erase_files(transcript_dir, "alice")["read_markers"] == 1
    assert [line["user"] for line in journal(transcript_dir)] == ["bob"]
    assert make_chat().read_markers.of("lobby", "bob", epoch) == 4
