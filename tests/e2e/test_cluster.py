"""Redis mode end to end: real `twistd -n chatd` nodes sharing rooms through a real
redis-server (tests/redis_harness.py; the `make_node` and `cluster` fixtures are in
tests/e2e/conftest.py). Ordering, presence and resume across nodes, a node's death, the
archiver; the failures of Redis itself are in test_cluster_faults.py."""

from __future__ import annotations

import json
import time

from chatd_harness import assert_contiguous, assert_message, assert_presence, wait_for
from cluster_settings import NODE_LEASE

ROOM = "lobby"


def events_of(client) -> list[dict]:
    return [frame for frame in client.received if frame["type"] in ("message", "presence")]


def connect(clients, node, name: str, kind: str = "ws"):
    client = clients(node.url(kind))
    client.hello(name)
    return client


def transcript(node) -> list[dict]:
    """The room's shared transcript; empty until the archiver first writes it."""
    return node.transcript(ROOM) if node.transcript_path(ROOM).exists() else []


def who(client) -> list[str]:
    """The room's members by `who`, sorted (members through other nodes are listed first)."""
    client.send({"type": "who", "room": ROOM})
    members = client.expect(type="members")
    assert sorted(members["names"]) == sorted(members["members"])
    return sorted(members["members"])


def settle(client, seq: int, acks: int) -> list[dict]:
    """Frames until event `seq` and `acks` acks have come (after sends not waited for)."""
    frames = []
    while sum(f["type"] == "ack" for f in frames) < acks or not any(
        f["type"] != "ack" and f["seq"] >= seq for f in frames
    ):
        frames.append(client.recv())
    assert all(f["type"] in ("ack", "message", "presence") for f in frames), frames
    return frames


def read_until_seq(client, seq: int, timeout: float = 15) -> list[dict]:
    """Events up to and including `seq`; nothing but events may come meanwhile."""
    frame, skipped = client.recv_until(
        lambda frame: frame["type"] in ("message", "presence") and frame["seq"] >= seq, timeout
    )
    assert all(f["type"] in ("message", "presence") for f in skipped), skipped
    assert frame["seq"] == seq, frame
    return [*skipped, frame]


def test_a_message_reaches_both_nodes_with_one_seq_and_epoch(cluster, clients):
    a, b = cluster
    ann, bob = connect(clients, a, "ann"), connect(clients, b, "bob", "wss")
    epoch = ann.join(ROOM)["epoch"]
    joined = bob.join(ROOM)
    assert (joined["epoch"], joined["seq"], joined["members"]) == (epoch, 1, ["ann", "bob"])
    assert_presence(ann.next_event(), room=ROOM, epoch=epoch, seq=2, user="bob", event="join")

    message, _ack = ann.say(ROOM, "hello across", "a-1")  # say checks: event, then its ack
    assert_message(
        message, room=ROOM, epoch=epoch, seq=3, sender="ann", id="a-1", text="hello across"
    )
    assert bob.next_event() == message

    message, _ack = bob.say(ROOM, "and back", "b-1")
    assert_message(message, room=ROOM, epoch=epoch, seq=4, sender="bob", id="b-1", text="and back")
    assert ann.next_event() == message


def test_interleaved_posts_from_both_nodes_arrive_everywhere_in_one_order(cluster, clients):
    a, b = cluster
    members = [
        connect(clients, a, "ann"),
        connect(clients, b, "bob", "wss"),
        connect(clients, a, "cat", "wss"),
        connect(clients, b, "dan"),
    ]
    epoch = members[0].join(ROOM)["epoch"]
    for member in members[1:]:
        member.join(ROOM)
    start = 4  # the last join's seq: every member reads every event after it
    for member in members[:-1]:
        read_until_seq(member, start)

    per_sender = 20
    for n in range(per_sender):  # sent without waiting: the nodes sequence them concurrently
        for member in members:
            member.send({"type": "say", "room": ROOM, "text": f"{member.name} {n}", "id": f"m{n}"})
    last = start + per_sender * len(members)

    seen = {}
    for member in members:
        frames = []
        while len([f for f in frames if f["type"] == "ack"]) < per_sender or not any(
            f.get("seq") == last and f["type"] != "ack" for f in frames
        ):
            frames.append(member.recv())
        events = [f for f in frames if f["type"] != "ack"]
        assert all(f["type"] == "message" for f in events), frames
        assert_contiguous(events, first=start + 1)
        assert {event["epoch"] for event in events} == {epoch}
        seen[member.name] = events
        # Each ack comes after its own event, with its seq, and the acks in the order sent.
        acks = [(i, f) for i, f in enumerate(frames) if f["type"] == "ack"]
        assert [f["id"] for _i, f in acks] == [f"m{n}" for n in range(per_sender)]
        for i, ack in acks:
            mine = [
                j
                for j, f in enumerate(frames)
                if f["type"] == "message" and f["from"] == member.name and f["id"] == ack["id"]
            ]
            assert len(mine) == 1 and mine[0] < i, (ack, frames)
            assert frames[mine[0]]["seq"] == ack["seq"]
        # Each sender's own messages keep the order it sent them in.
        assert [e["id"] for e in events if e["from"] == member.name] == [
            f"m{n}" for n in range(per_sender)
        ]
    reference = seen["ann"]
    for name, events in seen.items():
        assert events == reference, name

    # The archiver writes the same events, once each, in seq order, to the shared transcript.
    wait_for(lambda: len(transcript(a)) >= last, 15, "the transcript to catch up")
    written = transcript(a)
    assert_contiguous(written, first=1)
    assert written[start:] == reference


def test_members_on_the_other_node_are_listed(cluster, clients):
    a, b = cluster
    ann, bob = connect(clients, a, "ann"), connect(clients, b, "bob")
    ann.join(ROOM)
    assert bob.join(ROOM)["members"] == ["ann", "bob"]
    assert ann.next_event()["user"] == "bob"
    for client in (ann, bob):
        assert who(client) == ["ann", "bob"]


def test_a_user_on_both_nodes_leaves_only_with_the_last_session(cluster, clients, redis_server):
    a, b = cluster
    ann = connect(clients, a, "ann")
    epoch = ann.join(ROOM)["epoch"]
    cat_a = connect(clients, a, "cat")
    cat_a.join(ROOM)  # seq 2
    assert ann.next_event()["user"] == "cat"
    cat_b = connect(clients, b, "cat")
    joined = cat_b.join(ROOM, own_presence=False)  # cat is in already: no second join
    assert joined["members"] == ["ann", "cat"]
    message, _ = cat_b.say(ROOM, "from b", "c-1")
    assert message["seq"] == 3  # nothing was sequenced for cat's second session
    assert ann.next_event() == message

    held = "chatd:node:a:held"
    cat_a.close()
    wait_for(
        lambda: redis_server.command("HGET", held, f"{ROOM} cat") is None, 10, "a to let cat go"
    )
    # Listed still, through b, once a has read Redis's answer to its leave (a moment later).
    wait_for(lambda: who(ann) == ["ann", "cat"], 10, "cat listed through b", 0.1)
    marker, _ = cat_b.say(ROOM, "still here", "c-2")
    assert ann.next_event() == marker  # no leave before it

    cat_b.close()
    leave = ann.next_event()
    assert_presence(leave, room=ROOM, epoch=epoch, seq=5, user="cat", event="leave")
    assert who(ann) == ["ann"]
    wait_for(lambda: len(transcript(a)) == 5, 10, "the transcript")
    assert [(e.get("user"), e.get("event")) for e in transcript(a) if e["type"] == "presence"] == [
        ("ann", "join"),
        ("cat", "join"),
        ("cat", "leave"),
    ]


def test_a_client_that_left_node_a_resumes_on_node_b_with_exactly_what_it_missed(cluster, clients):
    a, b = cluster
    ann, bob = connect(clients, a, "ann"), connect(clients, b, "bob")
    epoch = ann.join(ROOM)["epoch"]
    bob.join(ROOM)
    ann.say(ROOM, "one", "a-1")
    bob.say(ROOM, "two", "b-1")
    seen = read_until_seq(ann, 4)[-1]["seq"]
    ann.close()  # her leave is one of the events she misses
    leave = bob.next_event()
    assert (leave["user"], leave["event"], leave["seq"]) == ("ann", "leave", seen + 1)

    for n in range(5):
        bob.say(ROOM, f"missed {n}", f"b-m{n}")
    missed = [e for e in events_of(bob) if e["seq"] > seen]
    assert [e.get("event") for e in missed[:1]] == ["leave"]
    assert len(missed) == 6

    again = connect(clients, b, "ann", "wss")
    joined = again.join(ROOM, since={"epoch": epoch, "seq": seen})
    assert (joined["epoch"], joined["seq"], joined["recovered"]) == (epoch, seen + 6, True)
    assert joined["history"] == missed
    assert_presence(
        again.received[-1], room=ROOM, epoch=epoch, seq=seen + 7, user="ann", event="join"
    )


def test_a_killed_node_s_members_leave_and_its_clients_resume_on_the_other(
    cluster, clients, redis_server
):
    a, b = cluster
    bob = connect(clients, b, "bob")
    epoch = bob.join(ROOM)["epoch"]
    ann, cat = connect(clients, a, "ann"), connect(clients, a, "cat", "wss")
    ann.join(ROOM)
    cat.join(ROOM)
    ann.say(ROOM, "before the kill", "a-1")
    seen = read_until_seq(bob, 4)[-1]["seq"]
    read_until_seq(cat, 4)

    a.kill()
    killed = time.monotonic()
    # cat reconnects to b at once, before a's lease runs out: cat never leaves.
    cat = connect(clients, b, "cat")
    joined = cat.join(ROOM, since={"epoch": epoch, "seq": seen}, own_presence=False)
    assert (joined["recovered"], joined["seq"], joined["history"]) == (True, seen, [])

    leave = bob.next_event(timeout=NODE_LEASE + 8)
    waited = time.monotonic() - killed
    assert_presence(leave, room=ROOM, epoch=epoch, seq=seen + 1, user="ann", event="leave")
    # The lease, a beat of the reaper (lease / 3), and slack for a loaded machine.
    assert waited < NODE_LEASE * 4 / 3 + 3, waited
    marker, _ = bob.say(ROOM, "after the kill", "b-1")  # no leave of cat's came before it
    assert marker["seq"] == seen + 2
    assert cat.next_event() == leave
    assert cat.next_event() == marker
    assert who(cat) == ["bob", "cat"]

    again = connect(clients, b, "ann")
    joined = again.join(ROOM, since={"epoch": epoch, "seq": seen})
    assert (joined["recovered"], joined["seq"]) == (True, seen + 2)
    assert joined["history"] == [leave, marker]


def test_the_archiver_writes_everything_once_across_the_death_of_the_archiving_node(
    cluster, clients, redis_server
):
    a, b = cluster
    nodes = {"a": a, "b": b}
    holder = wait_for(lambda: redis_server.command("GET", "chatd:archiver"), 10, "an archiver")
    archiving, other = nodes[holder.decode()], nodes[{"a": "b", "b": "a"}[holder.decode()]]
    watcher = connect(clients, other, "watcher")
    watcher.join(ROOM)  # seq 1: the watcher sees every event of the room
    poster, local = connect(clients, archiving, "ann"), connect(clients, other, "bob")
    poster.join(ROOM)
    local.join(ROOM)
    for n in range(10):
        poster.send({"type": "say", "room": ROOM, "text": f"ann {n}", "id": f"a{n}"})
        local.send({"type": "say", "room": ROOM, "text": f"bob {n}", "id": f"b{n}"})
    read_until_seq(watcher, 23)
    settle(poster, 23, 10)
    settle(local, 23, 10)
    wait_for(lambda: transcript(archiving) == events_of(watcher), 15, "the transcript")

    archiving.kill()
    for n in range(10, 15):
        local.say(ROOM, f"bob {n}", f"b{n}")
    # ann's leave, once the dead node's lease has run out; then the other node archives.
    leave, _ = watcher.recv_until(lambda f: f["type"] == "presence" and f["user"] == "ann")
    assert leave["event"] == "leave"
    wait_for(
        lambda: redis_server.command("GET", "chatd:archiver") == other_name(other, nodes),
        NODE_LEASE + 10,
        "the other node to take the archiver lease",
    )
    local.say(ROOM, "after the takeover", "b-last")
    read_until_seq(watcher, events_of(local)[-1]["seq"])
    expected = events_of(watcher)
    wait_for(lambda: transcript(other) == expected, 15, "the transcript after the kill")

    # The archiving node comes back under its name; the archive stays exact.
    archiving.start()
    late = connect(clients, archiving, "ann")
    late.join(ROOM)
    late.say(ROOM, "back again", "a-back")
    read_until_seq(watcher, events_of(late)[-1]["seq"])
    expected = events_of(watcher)
    wait_for(lambda: transcript(other) == expected, 15, "the transcript after the restart")
    assert_contiguous(other.transcript(ROOM), first=1)


def other_name(daemon, nodes) -> bytes:
    return next(name for name, node in nodes.items() if node is daemon).encode()


def test_typing_on_one_node_reaches_members_on_the_other_and_is_never_recorded(cluster, clients):
    a, b = cluster
    ann, bob = connect(clients, a, "ann"), connect(clients, b, "bob")
    ann.join(ROOM)
    bob.join(ROOM)
    read_until_seq(ann, 2)
    ann.send({"type": "typing", "room": ROOM, "typing": True})
    told = bob.expect(type="typing", user="ann", typing=True)
    assert (told["room"], told["name"]) == (ROOM, "ann")
    ann.say(ROOM, "done typing", "a-1")  # a message ends its sender's indicator
    frames = [bob.recv(), bob.recv()]
    assert {f["type"] for f in frames} == {"typing", "message"}
    assert [f["typing"] for f in frames if f["type"] == "typing"] == [False]
    bob.send({"type": "read", "room": ROOM, "seq": 3, "id": "r1"})  # told to ann's node too
    ann.expect(type="read", room=ROOM, user="bob", seq=3)
    wait_for(lambda: transcript(a), 10, "the transcript")
    assert all(event["type"] != "typing" for event in transcript(a))


def test_read_markers_are_kept_in_redis_and_known_on_every_node(cluster, clients, make_node):
    a, b = cluster
    ann, bob = connect(clients, a, "ann"), connect(clients, b, "bob")
    ann.join(ROOM)
    bob.join(ROOM)
    read_until_seq(ann, 2)
    for n in range(3):
        ann.say(ROOM, f"m{n}", f"a-{n}")
    read_until_seq(bob, 5)
    bob.send({"type": "read", "room": ROOM, "seq": 5, "id": "r1"})
    bob.expect(type="read", room=ROOM, user="bob", seq=5)
    ann.expect(type="read", room=ROOM, user="bob", seq=5)
    bob.send({"type": "read", "room": ROOM, "seq": 4, "id": "r2"})  # never moves back
    bob.expect(type="read", room=ROOM, user="bob", seq=5)

    # Another session of bob's, on the node where ann is, and a node that takes the room on
    # afresh: both know bob's marker.
    again = connect(clients, a, "bob")
    assert again.join(ROOM, own_presence=False)["read"] == {"bob": 5}
    c = make_node("c")
    cat = connect(clients, c, "cat")
    assert cat.join(ROOM)["read"] == {"bob": 5}
    assert not (a.transcripts / "read-markers.journal").exists()  # Redis holds them


def test_a_ban_and_a_mute_on_one_node_hold_on_every_node(make_node, clients, tmp_path):
    moderated = {"support": {"trial_agents": "mod"}, "room:lobby": {"moderate": "agent"}}
    a, b = make_node("a", **moderated), make_node("b", **moderated)
    troll, noisy = connect(clients, b, "troll"), connect(clients, b, "noisy")
    mod = connect(clients, a, "mod")
    for client in (troll, noisy, mod):
        client.join(ROOM, own_presence=False)

    mod.send({"type": "ban", "room": ROOM, "user": "troll", "duration": 60, "id": "b1"})
    left, _ = troll.recv_until(lambda f: f["type"] == "left")
    assert (left["room"], left["reason"], left["by"]) == (ROOM, "ban", "mod")
    troll.send({"type": "join", "room": ROOM, "id": "j1"})
    assert troll.recv_until(lambda f: f.get("ref") == "j1")[0]["code"] == "forbidden"

    mod.send({"type": "mute", "room": ROOM, "user": "noisy", "duration": 60, "id": "m1"})
    mod.recv_until(lambda f: f["type"] == "ack" and f["id"] == "m1")
    wait_for(lambda: any(f["type"] == "mute" for f in noisy.received) or noisy.recv(), 5, "mute")
    noisy.send({"type": "say", "room": ROOM, "text": "still here", "id": "n1"})
    assert noisy.recv_until(lambda f: f.get("ref") == "n1")[0]["code"] == "forbidden"

    # A node started afterwards, with transcripts (and moderation.json) of its own, learns
    # the ban from Redis as it takes the room on.
    elsewhere = {"directory": tmp_path / "elsewhere", "rotate": "never"}
    c = make_node("c", transcripts=elsewhere, redis={"archiver": "no"}, **moderated)
    again = connect(clients, c, "troll")
    again.send({"type": "join", "room": ROOM, "id": "j2"})
    refused = again.recv_until(lambda f: f.get("ref") == "j2")[0]
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    assert "banned" in refused["message"]


def test_bans_a_single_process_imposed_are_carried_over_into_redis(make_node, clients, tmp_path):
    a = make_node("a", start=False)
    a.transcripts.mkdir(parents=True, exist_ok=True)
    until = time.time() + 3600
    state = {"version": 1, "rooms": {ROOM: {"troll": {"ban": until}}}}
    (a.transcripts / "moderation.json").write_text(json.dumps(state))
    a.start()
    wait_for(lambda: "carried over into Redis" in a.log, 10, "the carry-over")
    elsewhere = {"directory": tmp_path / "elsewhere", "rotate": "never"}
    b = make_node("b", transcripts=elsewhere, redis={"archiver": "no"})
    troll = connect(clients, b, "troll")
    troll.send({"type": "join", "room": ROOM, "id": "j1"})
    refused = troll.recv_until(lambda f: f.get("ref") == "j1")[0]
    assert (refused["type"], refused["code"]) == ("error", "forbidden")


def test_an_edit_and_a_delete_on_one_node_revise_every_node_and_the_transcripts(
    cluster, clients, make_node
):
    a, b = cluster  # a archives (it started first); the requests go to b
    ann, bob = connect(clients, a, "ann"), connect(clients, b, "bob")
    ann.join(ROOM)
    bob.join(ROOM)
    read_until_seq(ann, 2)
    secret, _ = bob.say(ROOM, "card 4111-1111-1111-1111", "b-1")
    typo, _ = bob.say(ROOM, "helo", "b-2")
    wait_for(lambda: len(transcript(a)) >= typo["seq"], 10, "both messages archived")
    bob.send({"type": "edit", "room": ROOM, "seq": typo["seq"], "text": "hello", "id": "e1"})
    bob.recv_until(lambda f: f["type"] == "ack" and f["id"] == "e1")
    bob.send({"type": "delete", "room": ROOM, "seq": secret["seq"], "id": "d1"})
    delete, _ = bob.recv_until(lambda f: f["type"] == "delete")
    bob.expect(type="ack", id="d1")
    ann.recv_until(lambda f: f["type"] == "delete")

    def revised(lines: list[dict]) -> bool:
        by_seq = {line["seq"]: line for line in lines}
        return (
            by_seq.get(secret["seq"], {}).get("redacted") is True
            and "text" not in by_seq[secret["seq"]]
            and by_seq.get(typo["seq"], {}).get("text") == "hello"
        )

    wait_for(lambda: revised(transcript(a)), 10, "the transcript revised by the archiver")
    assert not any(b"4111" in path.read_bytes() for path in a.transcripts.glob("*.jsonl"))

    readers = iter(range(10))

    def history_on(node) -> list[dict]:
        reader = connect(clients, node, f"reader{next(readers)}")
        reader.send({"type": "history", "room": ROOM, "id": "h"})
        return reader.recv_until(lambda f: f["type"] == "history")[0]["events"]

    # Every node's memory is revised: a (the author's events came from b), and c, which takes
    # the room on afresh from Redis's stream, where the lines are as they were sent.
    assert revised(history_on(a)) and revised(history_on(b))
    c = make_node("c")
    assert revised(history_on(c))
    assert delete["seq"] > typo["seq"]


def test_history_beyond_memory_comes_from_the_stream_while_the_archiver_lags(make_node, clients):
    # No node archives: every event stays in Redis's stream only; memory holds the last 5.
    a = make_node("a", redis={"archiver": "no"}, history={"memory_events": 5, "replay_events": 5})
    ann = connect(clients, a, "ann")
    ann.join(ROOM)
    sent = [ann.say(ROOM, f"m{n}", f"a-{n}")[0] for n in range(12)]
    ann.send({"type": "delete", "room": ROOM, "seq": sent[2]["seq"], "id": "d1"})
    ann.recv_until(lambda f: f["type"] == "ack" and f["id"] == "d1")
    ann.send({"type": "history", "room": ROOM, "before": sent[6]["seq"], "limit": 5, "id": "h"})
    page = ann.recv_until(lambda f: f["type"] == "history")[0]
    assert [e["seq"] for e in page["events"]] == [m["seq"] for m in sent[1:6]]
    assert [e.get("text") for e in page["events"]] == ["m1", None, "m3", "m4", "m5"]
    assert page["events"][1]["redacted"] is True  # the delete, from memory, applied
    assert not a.transcript_path(ROOM).exists()  # none of it was archived
