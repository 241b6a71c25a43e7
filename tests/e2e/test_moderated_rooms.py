"""Edits, deletions, bans, retention and erasure against a real daemon (issue 15)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from chatd_harness import wait_for

TRANSCRIPT_CLI = Path(sys.executable).parent / "chatd-transcript"
SECRET = "4111-1111-1111-1111"
# The `mod` user gets the agent role by name (open mode, for trials); lobby is moderated by it.
MODERATED = {"support": {"trial_agents": "mod"}, "room:lobby": {"moderate": "agent"}}


def files_containing(directory: Path, text: str) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def entered(clients, daemon, name, room="lobby", since=None):
    client = clients(daemon.url())
    client.hello(name)
    joined = client.join(room, since=since)
    return client, joined


def reply(client, kind, ref):
    frame, _ = client.recv_until(
        lambda f: f.get("type") in (kind, "error") and f.get("ref", f.get("id")) == ref
    )
    assert frame["type"] == kind, frame
    return frame


def test_an_author_edits_and_deletes(make_daemon, clients):
    daemon = make_daemon()
    alice, _ = entered(clients, daemon, "alice")
    message, _ = alice.say("lobby", "helo", "m1")
    alice.send(
        {"type": "edit", "room": "lobby", "seq": message["seq"], "text": "hello", "id": "e1"}
    )
    edit, _ = alice.recv_until(lambda f: f["type"] == "edit")
    assert (edit["target"], edit["text"], edit["from"]) == (message["seq"], "hello", "alice")
    assert alice.expect(type="ack", id="e1")["seq"] == edit["seq"]
    alice.send({"type": "delete", "room": "lobby", "seq": message["seq"], "id": "d1"})
    delete, _ = alice.recv_until(lambda f: f["type"] == "delete")
    assert delete["target"] == message["seq"] and alice.expect(type="ack", id="d1")
    lines = daemon.transcript("lobby")
    target = next(line for line in lines if line["seq"] == message["seq"])
    assert target["redacted"] is True and "text" not in target
    assert [line["seq"] for line in lines] == list(range(1, len(lines) + 1))
    assert not files_containing(daemon.transcripts, "helo") and not files_containing(
        daemon.transcripts, '"hello"'
    )


def test_a_moderator_deletes_and_the_text_is_nowhere(make_daemon, clients):
    daemon = make_daemon(**MODERATED)
    alice, joined = entered(clients, daemon, "alice")
    epoch = joined["epoch"]
    message, _ = alice.say("lobby", f"my card is {SECRET}", "m1")
    alice.say("lobby", "oops", "m2")
    mod, _ = entered(clients, daemon, "mod")
    mod.send({"type": "delete", "room": "lobby", "seq": message["seq"], "id": "d1"})
    assert mod.recv_until(lambda f: f["type"] == "ack" and f["id"] == "d1")
    bob = clients(daemon.url())
    bob.hello("bob")
    bob.send({"type": "delete", "room": "lobby", "seq": message["seq"], "id": "d2"})
    assert bob.expect(type="error", ref="d2")["code"] == "forbidden"
    served = []
    carol, joined = entered(clients, daemon, "carol")
    served.append(joined)
    _resumer, joined = entered(clients, daemon, "dave", since={"epoch": epoch, "seq": 1})
    assert joined["recovered"] is True
    served.append(joined)
    carol.send({"type": "history", "room": "lobby", "id": "h1"})
    served.append(reply(carol, "history", "h1"))
    for frame in served:
        assert SECRET not in json.dumps(frame), frame
    assert any(e.get("redacted") for e in served[0]["history"])
    assert files_containing(daemon.transcripts, SECRET) == []
    daemon.restart()
    _erin, joined = entered(clients, daemon, "erin")
    assert SECRET not in json.dumps(joined)


def test_a_banned_user_cannot_rejoin_until_the_ban_expires_even_across_a_restart(
    make_daemon, clients
):
    daemon = make_daemon(**MODERATED)
    troll, _ = entered(clients, daemon, "troll")
    mod, _ = entered(clients, daemon, "mod")
    mod.send({"type": "ban", "room": "lobby", "user": "troll", "duration": 8, "id": "b1"})
    banned_at = time.monotonic()
    left, _ = troll.recv_until(lambda f: f["type"] == "left")
    assert (left["reason"], left["by"]) == ("ban", "mod")
    troll.send({"type": "join", "room": "lobby", "id": "j1"})
    assert troll.expect(type="error", ref="j1")["code"] == "forbidden"
    daemon.restart()
    troll = clients(daemon.url())
    troll.hello("troll")
    troll.send({"type": "join", "room": "lobby", "id": "j2"})
    assert troll.expect(type="error", ref="j2")["code"] == "forbidden"
    time.sleep(max(8.5 - (time.monotonic() - banned_at), 0))
    troll.join("lobby")
    assert any(line["type"] == "ban" for line in daemon.transcript("lobby"))


def _old_line(seq: int, text: str, epoch="e0ld", ts="2020-01-01T00:00:00.000Z") -> str:
    record = {"type": "message", "room": "lobby", "epoch": epoch, "seq": seq, "ts": ts}
    record |= {"from": "old", "name": "old", "id": f"o{seq}", "text": text}
    return json.dumps(record, separators=(",", ":")) + "\n"


def test_retention_removes_old_events_while_a_follower_keeps_running(make_daemon, clients):
    daemon = make_daemon(start=False, retention={"max_age": "1d"})
    daemon.transcripts.mkdir()
    rotated = daemon.transcripts / "lobby.2020-01-01T000000Z.jsonl"
    rotated.write_text(_old_line(1, "ancient one") + _old_line(2, "ancient two"))
    daemon.transcript_path("lobby").write_text(_old_line(3, "ancient three"))
    follower = subprocess.Popen(
        [str(TRANSCRIPT_CLI), "--dir", str(daemon.transcripts), "--follow", "--json", "-q"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(follower.stdout), daemon=True).start()
    try:
        wait_for(lambda: len(lines) >= 3, 10, "the old lines")
        daemon.start()
        wait_for(lambda: not rotated.exists(), 10, "the old rotated file to go")
        wait_for(
            lambda: not files_containing(daemon.transcripts, "ancient"), 10, "the old events to go"
        )
        alice, joined = entered(clients, daemon, "alice")
        assert joined["epoch"] == "e0ld" and joined["seq"] == 3  # kept by the stub line
        alice.say("lobby", "fresh words", "a1")
        wait_for(lambda: any("fresh words" in line for line in lines), 10, "the follower")
        assert follower.poll() is None
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(10)


def test_erasure_leaves_no_text_of_the_user_and_keeps_the_others(make_daemon, clients):
    daemon = make_daemon()
    alice, _ = entered(clients, daemon, "alice")
    bob, _ = entered(clients, daemon, "bob")
    alice.say("lobby", "alice private one", "a1")
    bob.say("lobby", "bob public one", "b1")
    alice.send({"type": "join", "room": "other"})
    alice.recv_until(lambda f: f["type"] == "joined")
    alice.say("other", "alice private two", "a2")
    seqs = {room: [e["seq"] for e in daemon.transcript(room)] for room in ("lobby", "other")}
    result = subprocess.run(
        [str(TRANSCRIPT_CLI), "erase", "--user", "alice", "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "2 event(s) redacted, by the running daemon" in result.stdout
    assert files_containing(daemon.transcripts, "alice private") == []
    assert files_containing(daemon.transcripts, "bob public one")
    for room, before in seqs.items():
        assert [e["seq"] for e in daemon.transcript(room)] == before
    _carol, joined = entered(clients, daemon, "carol")
    assert "alice private" not in json.dumps(joined) and "bob public one" in json.dumps(joined)
    # With no daemon running, the tool does it itself.
    daemon.stop()
    result = subprocess.run(
        [str(TRANSCRIPT_CLI), "erase", "--user", "bob", "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "no daemon was running" in result.stdout, result
    assert files_containing(daemon.transcripts, "bob public one") == []
