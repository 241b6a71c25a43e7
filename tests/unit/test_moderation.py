"""Edits, deletions (redacted in memory and on disk), kick/ban/mute, retention and erasure."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from chatd import errors, rewrite, wire
from chatd.auth import OpenAuthenticator
from chatd.config import RoomPolicy
from chatd.erasure import erase_files
from chatd.errors import ChatError
from chatd.redaction import redact
from chatd.transcript import rotated_path

SECRET = "card 4111 1111 1111 1111"


def moderated(**rooms):
    """[rooms] with `lobby` declared, moderated by the `mod` role."""
    policy = RoomPolicy(moderate=("mod",))
    return {"rooms": {"declared": {"lobby": policy}, **rooms}}


@pytest.fixture
def join_as(make_connection):
    def join_as(server, name, room="lobby", roles=(), since=None):
        connection = make_connection()
        identity = OpenAuthenticator().identify(wire.Hello(name=name, ref=None))
        identity = replace(identity, roles=frozenset(roles))
        session, _ = server.hello(connection, identity, wire.Hello(name=name, ref=None))
        joined = json.loads(server.join(session, wire.Join(room=room, since=since, ref=None)))
        return session, connection, joined

    return join_as


def say(server, clock, session, text, id, room="lobby"):
    server.handle(session, wire.Say(room=room, text=text, id=id))
    clock.advance(0)
    return session.connection.of_type("ack")[-1]["seq"]


def transcript_text(directory) -> str:
    return "".join(p.read_text() for p in sorted(directory.iterdir()) if p.is_file())


def test_author_edits_within_the_window(make_chat, clock, join_as, transcript_dir):
    server = make_chat(**moderated())
    alice, conn, _ = join_as(server, "alice")
    seq = say(server, clock, alice, "helo", "m1")
    clock.advance(60)
    server.handle(alice, wire.Edit(room="lobby", seq=seq, text="hello", id="e1"))
    clock.advance(0)
    edit = conn.of_type("edit")[-1]
    assert (edit["target"], edit["text"], edit["from"]) == (seq, "hello", "alice")
    assert conn.of_type("ack")[-1] == {"type": "ack", "id": "e1", "seq": edit["seq"]}
    _bob, _c, joined = join_as(server, "bob")
    target = next(e for e in joined["history"] if e["seq"] == seq)
    assert target["text"] == "hello" and "edited" in target
    assert '"text":"helo"' not in (transcript_dir / "lobby.jsonl").read_text()


def test_edit_rules(make_chat, clock, join_as):
    server = make_chat(**moderated(edit_window=300.0))
    alice, _, _ = join_as(server, "alice")
    bob, _, _ = join_as(server, "bob", roles=["mod"])
    seq = say(server, clock, alice, "hi", "m1")
    with pytest.raises(ChatError) as caught:
        server.handle(bob, wire.Edit(room="lobby", seq=seq, text="x", id="e1"))
    assert caught.value.code == errors.FORBIDDEN  # moderators do not edit others' words
    with pytest.raises(ChatError) as caught:
        server.handle(alice, wire.Edit(room="lobby", seq=999, text="x", id="e2"))
    assert caught.value.code == errors.NOT_FOUND
    with pytest.raises(ChatError) as caught:
        server.handle(alice, wire.Edit(room="lobby", seq=1, text="x", id="e3"))
    assert caught.value.code == errors.NOT_FOUND  # a presence event is no message
    clock.advance(301)
    with pytest.raises(ChatError) as caught:
        server.handle(alice, wire.Edit(room="lobby", seq=seq, text="x", id="e4"))
    assert caught.value.code == errors.EDIT_WINDOW_PASSED


def test_delete_permissions(make_chat, clock, join_as):
    server = make_chat(**moderated())
    alice, _, _ = join_as(server, "alice")
    bob, _, _ = join_as(server, "bob")
    mod, mod_conn, _ = join_as(server, "mod", roles=["mod"])
    seq = say(server, clock, alice, "hi", "m1")
    with pytest.raises(ChatError) as caught:
        server.handle(bob, wire.Delete(room="lobby", seq=seq, id="d1"))
    assert caught.value.code == errors.FORBIDDEN
    server.handle(mod, wire.Delete(room="lobby", seq=seq, id="d2"))
    clock.advance(0)
    assert mod_conn.of_type("delete")[-1]["target"] == seq
    assert mod_conn.of_type("ack")[-1]["id"] == "d2"


def test_moderation_only_in_declared_rooms_or_by_agents(make_chat, clock, join_as):
    server = make_chat(**moderated())
    alice, _, _ = join_as(server, "alice", room="elsewhere")
    mod, _, _ = join_as(server, "mod", room="elsewhere", roles=["mod"])
    seq = say(server, clock, alice, "hi", "m1", room="elsewhere")
    with pytest.raises(ChatError) as caught:
        server.handle(mod, wire.Delete(room="elsewhere", seq=seq, id="d1"))
    assert caught.value.code == errors.FORBIDDEN


def test_support_agents_moderate_support_rooms(make_chat, clock, join_as):
    server = make_chat(support={"enabled": True})
    carol, _, _ = join_as(server, "carol", room="support-carol")
    agent, agent_conn, _ = join_as(server, "ann", room="support-carol", roles=["agent"])
    seq = say(server, clock, carol, SECRET, "m1", room="support-carol")
    server.handle(agent, wire.Delete(room="support-carol", seq=seq, id="d1"))
    clock.advance(0)
    assert agent_conn.of_type("ack")[-1]["id"] == "d1"


def test_deleted_text_is_served_nowhere_and_kept_nowhere(make_chat, clock, join_as, transcript_dir):
    server = make_chat(**moderated())
    alice, conn, _ = join_as(server, "alice")
    seq = say(server, clock, alice, "card 4111", "m1")
    server.handle(alice, wire.Edit(room="lobby", seq=seq, text=SECRET, id="e1"))
    clock.advance(0)
    say(server, clock, alice, "after", "m2")
    server.handle(alice, wire.Delete(room="lobby", seq=seq, id="d1"))
    clock.advance(0)
    delete = conn.of_type("delete")[-1]
    assert delete["target"] == seq and "text" not in delete
    _bob, _c, joined = join_as(server, "bob")
    target = next(e for e in joined["history"] if e["seq"] == seq)
    assert target["redacted"] is True and "text" not in target
    assert (target["from"], target["type"]) == ("alice", "message")
    assert "4111" not in json.dumps(joined)
    assert "4111" not in transcript_text(transcript_dir)
    # Served from the files, after a restart: the same.
    server.shutdown()
    again = make_chat(**moderated())
    reader, _, _ = join_as(again, "carol")
    page = json.loads(
        again.handle(reader, wire.History(room="lobby", before=None, limit=50, ref=None))
    )
    assert "4111" not in json.dumps(page)
    assert any(e.get("redacted") for e in page["events"])


def test_history_from_rotated_files_is_redacted(make_chat, clock, join_as, transcript_dir):
    # Every batch rotates the file; the ring holds two events.
    server = make_chat(
        **moderated(),
        history={"memory_events": 2, "replay_events": 1},
        transcripts={"rotate_size": 1},
    )
    alice, _, _ = join_as(server, "alice")
    seq = say(server, clock, alice, SECRET, "m1")
    for n in range(3):
        say(server, clock, alice, f"more {n}", f"n{n}")
    assert len(list(transcript_dir.glob("lobby.*.jsonl"))) >= 3
    server.handle(alice, wire.Delete(room="lobby", seq=seq, id="d1"))
    clock.advance(0)
    assert alice.connection.of_type("ack")[-1]["id"] == "d1"
    assert "4111" not in transcript_text(transcript_dir)
    history = wire.History(room="lobby", before=None, limit=50, ref=None)
    page = json.loads(server.handle(alice, history))
    assert "4111" not in json.dumps(page)
    assert [e["seq"] for e in page["events"]][:3] == [1, 2, 3]


def test_ban_refuses_join_until_it_expires_even_after_a_restart(make_chat, clock, join_as):
    server = make_chat(**moderated())
    troll, troll_conn, _ = join_as(server, "troll")
    mod, _, _ = join_as(server, "mod", roles=["mod"])
    server.handle(mod, wire.Sanction("ban", "lobby", "troll", 600, "b1"))
    clock.advance(0)
    left = troll_conn.of_type("left")[-1]
    assert (left["reason"], left["by"]) == ("ban", "mod")
    assert "troll" not in server.rooms["lobby"].members
    assert mod.connection.of_type("ban")[-1]["user"] == "troll"
    server.shutdown()
    server = make_chat(**moderated())
    with pytest.raises(ChatError) as caught:
        join_as(server, "troll")
    assert caught.value.code == errors.FORBIDDEN
    troll = server.sessions.of_user("troll")[0]
    clock.advance(601)
    server.join(troll, wire.Join(room="lobby", since=None, ref=None))


def test_ban_reaches_every_session_and_lifts_with_zero(make_chat, clock, join_as):
    server = make_chat(**moderated())
    mod, _, _ = join_as(server, "mod", roles=["mod"])
    first, conn1, _ = join_as(server, "troll")
    with pytest.raises(ChatError):
        server.handle(first, wire.Sanction("ban", "lobby", "mod", 60, None))
    server.handle(mod, wire.Sanction("ban", "lobby", "troll", 60, None))
    assert conn1.of_type("left") and not first.rooms
    server.handle(mod, wire.Sanction("ban", "lobby", "troll", 0, None))
    join_as(server, "troll2")
    server.join(first, wire.Join(room="lobby", since=None, ref=None))


def test_mute_refuses_posting_until_it_expires(make_chat, clock, join_as):
    server = make_chat(**moderated())
    mod, _, _ = join_as(server, "mod", roles=["mod"])
    loud, _, _ = join_as(server, "loud")
    server.handle(mod, wire.Sanction("mute", "lobby", "loud", 30, None))
    with pytest.raises(ChatError) as caught:
        server.handle(loud, wire.Say(room="lobby", text="hey", id="s1"))
    assert caught.value.code == errors.FORBIDDEN
    clock.advance(31)
    say(server, clock, loud, "hey", "s2")


def test_kick_removes_without_a_ban(make_chat, clock, join_as):
    server = make_chat(**moderated())
    mod, _, _ = join_as(server, "mod", roles=["mod"])
    pest, conn, _ = join_as(server, "pest")
    server.handle(mod, wire.Sanction("kick", "lobby", "pest", None, None))
    clock.advance(0)
    assert conn.of_type("left")[-1]["reason"] == "kick"
    assert mod.connection.of_type("kick")[-1]["user"] == "pest"
    server.join(pest, wire.Join(room="lobby", since=None, ref=None))


# -- the atomic rewrite ----------------------------------------------------------------------


def test_a_crash_before_the_rename_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "lobby.jsonl"
    lines = [
        json.dumps(
            {
                "type": "message",
                "room": "lobby",
                "epoch": "e",
                "seq": n,
                "ts": "2026-01-01T00:00:00.000Z",
                "from": "a",
                "text": f"t{n}",
            },
            separators=(",", ":"),
        )
        for n in range(1, 6)
    ]
    path.write_text("\n".join(lines) + "\n")

    def crash():
        raise OSError("power cut")

    with pytest.raises(OSError):
        rewrite.rewrite(path, redact("e", 3), before_rename=crash)
    assert path.read_text().splitlines() == lines  # the old file, every line
    assert rewrite.aside_path(path).exists()  # the half-done work, which is never read
    assert rewrite.remove_stale(tmp_path) == [rewrite.aside_path(path)]
    done = rewrite.rewrite(path, redact("e", 3))
    assert done.changed == 1
    after = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["seq"] for r in after] == [1, 2, 3, 4, 5]
    assert after[2]["redacted"] is True and "text" not in after[2]


# -- retention ---------------------------------------------------------------------------------


def test_retention_removes_old_events_and_keeps_the_epoch(
    make_chat, clock, join_as, transcript_dir
):
    clock.advance(1_000_000)
    config = {"retention": {"max_age": 3600.0}}
    server = make_chat(**config)
    alice, _conn, joined = join_as(server, "alice")
    epoch = joined["epoch"]
    old = say(server, clock, alice, "old words", "m1")
    clock.advance(7200)
    new = say(server, clock, alice, "new words", "m2")
    server.retention.run()
    clock.advance(0)
    text = transcript_text(transcript_dir)
    assert "old words" not in text and "new words" in text
    # Who saw up to the old message misses nothing that is gone; who saw less does.
    _bob, _, joined = join_as(server, "bob", since=wire.Since(epoch, old))
    assert joined["recovered"] is True and joined["epoch"] == epoch
    _erin, _, joined = join_as(server, "erin", since=wire.Since(epoch, old - 1))
    assert joined["recovered"] is False and joined["epoch"] == epoch
    _carol, _, joined = join_as(server, "carol", since=wire.Since(epoch, new))
    assert joined["recovered"] is True
    # Everything old: the newest line stays, as a stub, so seqs go on.
    clock.advance(7200)
    server.retention.run()
    server.shutdown()
    server = make_chat(**config)
    _dave, _, joined = join_as(server, "dave", since=wire.Since(epoch, joined["seq"] + 1))
    assert joined["epoch"] == epoch and "new words" not in transcript_text(transcript_dir)


def test_retention_deletes_whole_rotated_files(make_chat, clock, join_as, transcript_dir):
    clock.advance(1_000_000)
    server = make_chat(retention={"max_age": 3600.0})
    alice, _, _ = join_as(server, "alice")
    say(server, clock, alice, "ancient", "m1")
    server.shutdown()
    current = transcript_dir / "lobby.jsonl"
    rotated = rotated_path(current, clock.seconds())
    current.rename(rotated)
    clock.advance(7200)
    server = make_chat(retention={"max_age": 3600.0})
    join_as(server, "alice")
    clock.advance(0)  # the pass at start
    assert not rotated.exists()
    assert "ancient" not in transcript_text(transcript_dir)


# -- erasure -----------------------------------------------------------------------------------


def test_erasure_in_the_daemon_and_offline(make_chat, clock, join_as, transcript_dir):
    server = make_chat()
    alice, _, _ = join_as(server, "alice")
    bob, _, _ = join_as(server, "bob")
    say(server, clock, alice, "alice secret one", "a1")
    say(server, clock, bob, "bob stays", "b1")
    join_as(server, "alice2", room="other")
    say(server, clock, alice, "alice secret two", "a2")
    before = [
        json.loads(line)["seq"]
        for line in (transcript_dir / "lobby.jsonl").read_text().splitlines()
    ]
    reports = []
    server.erasure.erase("alice").addCallback(reports.append)
    assert reports[0]["events"] == 2 and set(reports[0]["rooms"]) == {"lobby"}
    text = transcript_text(transcript_dir)
    assert "alice secret" not in text and "bob stays" in text
    after = [
        json.loads(line)["seq"]
        for line in (transcript_dir / "lobby.jsonl").read_text().splitlines()
    ]
    assert after == before
    _c, _, joined = join_as(server, "carol")
    assert "alice secret" not in json.dumps(joined)
    server.shutdown()
    assert erase_files(transcript_dir, "bob")["events"] == 1
    assert "bob stays" not in transcript_text(transcript_dir)


def test_a_node_that_does_not_archive_forgets_old_events_in_memory_only(
    make_chat, clock, join_as, transcript_dir
):
    """Redis mode: only the archiving node rewrites transcripts (`may_rewrite`)."""
    clock.advance(1_000_000)
    server = make_chat(retention={"max_age": 3600.0})
    server.retention.may_rewrite = lambda: False
    alice, _conn, _joined = join_as(server, "alice")
    old = say(server, clock, alice, "old words", "m1")
    clock.advance(7200)
    say(server, clock, alice, "new words", "m2")
    server.retention.run()
    clock.advance(0)
    assert "old words" in transcript_text(transcript_dir)  # the archiver's to remove
    assert server.rooms["lobby"].find(old) is None  # gone from memory all the same
    server.retention.may_rewrite = lambda: True
    server.retention.run()
    clock.advance(0)
    assert "old words" not in transcript_text(transcript_dir)
