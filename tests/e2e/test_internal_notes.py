"""Internal notes against a real daemon (issue 14, item 4): a customer never receives an
agent's note by any path (live, join, resume, history, after a restart); agents do; the
transcript holds the note marked as such."""

from __future__ import annotations

ROOM = "support-carol"
NOTE = "note-for-agents-only-7731"
# Open mode, for trials: these names get the agent role; small rings, so that history pages
# and a resume after the restart read the transcript files.
DESK = {
    "support": {"enabled": "yes", "trial_agents": "ann bob"},
    "history": {"memory_events": 4, "replay_events": 4},
}


def reply(client, kind, ref):
    frame, _ = client.recv_until(
        lambda f: f.get("type") in (kind, "error") and f.get("ref", f.get("id")) == ref
    )
    assert frame["type"] == kind, frame
    return frame


def history(client, ref, **fields) -> list[dict]:
    client.send({"type": "history", "room": ROOM, "id": ref, "limit": 50, **fields})
    return reply(client, "history", ref)["events"]


def never_saw_the_note(client) -> None:
    assert all(NOTE not in raw for raw in client.raw), client.raw
    assert not [f for f in client.received if f.get("type") == "note"]


def test_a_customer_never_receives_a_note_by_any_path_and_agents_do(make_daemon, clients):
    daemon = make_daemon(**DESK)
    carol = clients(daemon.url())
    welcome = carol.hello("carol")
    assert welcome["support_room"] == ROOM
    epoch = carol.join(ROOM)["epoch"]
    before_note, _ = carol.say(ROOM, "where is my parcel?", "c1")
    ann, bob = clients(daemon.url()), clients(daemon.url())
    for agent in (ann, bob):
        agent.hello(agent_name := ("ann" if agent is ann else "bob"))
        assert "agent" in agent.received[-1]["roles"], agent_name
        agent.join(ROOM)

    # A customer may not write one.
    carol.send({"type": "note", "room": ROOM, "text": "let me in", "id": "x1"})
    assert reply(carol, "error", "x1")["code"] == "forbidden"

    # Live: both agents get it, the writer acknowledged after the event; the customer gets
    # the message after it, over a gap in seq.
    ann.send({"type": "note", "room": ROOM, "text": NOTE, "id": "n1"})
    note, _ = ann.recv_until(lambda f: f["type"] == "note")
    assert (note["from"], note["text"], note["audience"]) == ("ann", NOTE, "agent")
    assert ann.expect(type="ack", id="n1")["seq"] == note["seq"]
    assert bob.recv_until(lambda f: f["type"] == "note")[0]["seq"] == note["seq"]
    answer, _ = ann.say(ROOM, "it is on its way", "a1")
    live, _ = carol.recv_until(lambda f: f["type"] == "message" and f["from"] == "ann")
    assert live["seq"] == answer["seq"] == note["seq"] + 1

    # A fresh join (another session of hers), and a resume from before the note.
    fresh = clients(daemon.url())
    fresh.hello("carol", secret=welcome["secret"])
    joined = fresh.join(ROOM, own_presence=False)
    assert "it is on its way" in [e.get("text") for e in joined["history"]]
    resumer = clients(daemon.url())
    resumer.hello("carol", secret=welcome["secret"])
    since = {"epoch": epoch, "seq": before_note["seq"]}
    resumed = resumer.join(ROOM, since=since, own_presence=False)
    assert resumed["recovered"] is True
    missed = [seq for seq in range(before_note["seq"] + 1, answer["seq"] + 1) if seq != note["seq"]]
    assert [e["seq"] for e in resumed["history"]] == missed  # the agents' joins, the answer
    # History paging, from memory and (past the small ring) from the transcript.
    paged = history(resumer, "h1")
    assert [e["seq"] for e in paged if e["type"] == "message"] == [
        before_note["seq"],
        answer["seq"],
    ]
    assert NOTE in [e.get("text") for e in history(bob, "h2")]
    for customer in (carol, fresh, resumer):
        never_saw_the_note(customer)

    # After a restart: join, resume and history all come from the transcript files.
    daemon.restart()
    carol = clients(daemon.url())
    carol.hello("carol")
    carol.join(ROOM, since={"epoch": epoch, "seq": before_note["seq"]})
    assert [e["seq"] for e in history(carol, "h3", before=answer["seq"] + 1)][-2:] == [
        before_note["seq"] + 2,  # bob's join; ann's is before it, the note after it
        answer["seq"],
    ]
    later = clients(daemon.url())
    later.hello("carol", secret=carol.received[0]["secret"])
    later.join(ROOM, own_presence=False)
    for customer in (carol, later):
        never_saw_the_note(customer)
    ann = clients(daemon.url())
    ann.hello("ann")
    ann.join(ROOM)
    assert NOTE in [e.get("text") for e in history(ann, "h5", before=answer["seq"] + 1)]

    # The transcript holds it, marked.
    line = next(line for line in daemon.transcript(ROOM) if line["seq"] == note["seq"])
    assert (line["type"], line["audience"], line["text"]) == ("note", "agent", NOTE)
