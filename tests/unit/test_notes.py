"""Internal notes (issue 14, item 4) and the core rule under them: an event with an audience
reaches only the sessions holding that role, live and in every history path.

Driven through the real Server (the desk and its notes attached by `tap.build_server`), and
once through a listener with a real Autobahn client.
"""

import json

import pytest

from chatd import errors, wire
from chatd.auth import Identity, OpenAuthenticator
from chatd.errors import ChatError
from chatd.events import Event
from chatd.support import support_room_of

ROOM = support_room_of("carol")
AGENT = frozenset({"agent"})


def identify(name: str, roles: frozenset[str] = frozenset()) -> Identity:
    return Identity(name, name, roles)


def refusal_code(call, *args) -> str:
    with pytest.raises(ChatError) as caught:
        call(*args)
    return caught.value.code


@pytest.fixture
def desk(make_chat):
    def make(**sections):
        return make_chat(support={"enabled": True}, **sections)

    return make


@pytest.fixture
def conversation(desk, enter):
    """`conversation(server=None)`: carol (the customer) and two agents, ann and bob, in
    carol's room; returns (server, {name: (session, connection)})."""

    def make(server=None, **sections):
        server = server or desk(**sections)
        people = {}
        for name in ("carol", "ann", "bob"):
            roles = AGENT if name != "carol" else frozenset()
            session, connection, _ = enter(server, name, ROOM, identity=identify(name, roles=roles))
            people[name] = (session, connection)
        return server, people

    return make


def say(server, session, text: str, id: str) -> None:
    server.handle(session, wire.Say(room=ROOM, text=text, id=id))


def note(server, session, text: str, id: str, room: str = ROOM) -> None:
    server.handle(session, wire.Note(room=room, text=text, id=id))


def texts(connection) -> list[tuple[str, str]]:
    return [(f["type"], f["text"]) for f in connection.frames if "text" in f]


def seqs(lines: list[bytes]) -> list[int]:
    return [json.loads(line)["seq"] for line in lines]


# -- the wire ----------------------------------------------------------------------------------


def test_a_note_frame_is_parsed_like_a_say():
    parser = wire.FrameParser(max_text_chars=10)
    frame = b'{"type":"note","room":"support-carol","text":"Cafe\\u0301","id":"n1"}'
    assert parser.parse(frame) == wire.Note(room="support-carol", text="Café", id="n1")
    for bad, code in [
        (b'{"type":"note","room":"support-carol","text":"x"}', errors.BAD_ID),
        (b'{"type":"note","room":"support-carol","text":" ","id":"n1"}', errors.BAD_TEXT),
        (b'{"type":"note","room":"support-carol","text":"' + b"x" * 11 + b'","id":"n"}', None),
    ]:
        with pytest.raises(ChatError) as caught:
            parser.parse(bad)
        assert caught.value.code == (code or errors.TEXT_TOO_LONG)


def test_an_events_audience_is_read_from_its_line():
    line = b'{"type":"note","room":"r","epoch":"e","seq":3,"ts":"2026-01-01T00:00:00.000Z",'
    note_event = Event.from_line(line + b'"from":"ann","text":"x","audience":"agent"}')
    message = Event.from_line(line.replace(b"note", b"message") + b'"from":"ann","text":"x"}')
    assert (note_event.audience, message.audience) == ("agent", None)
    assert note_event.visible_to(AGENT) and not note_event.visible_to(frozenset({"admin"}))
    assert message.visible_to(frozenset())


# -- live delivery -----------------------------------------------------------------------------


def test_the_customer_gets_the_messages_around_a_note_but_never_the_note(
    conversation, clock, prepared_frames
):
    server, people = conversation()
    (carol, carol_conn), (ann, ann_conn), (_bob, bob_conn) = people.values()
    prepared_frames.clear()
    # One batch: a message, a note and a message.
    say(server, carol, "where is my order?", "c1")
    note(server, ann, "VIP customer, be quick", "n1")
    say(server, ann, "looking into it", "a1")
    clock.advance(0)
    everything = [
        ("message", "where is my order?"),
        ("note", "VIP customer, be quick"),
        ("message", "looking into it"),
    ]
    assert texts(ann_conn)[-3:] == everything
    assert texts(bob_conn)[-3:] == everything
    assert texts(carol_conn)[-2:] == [everything[0], everything[2]]
    assert "VIP" not in json.dumps(carol_conn.frames)
    # Prepared once per distinct view: the agents share one, the customer has the other.
    assert len(prepared_frames) == 2
    assert ann_conn.prepared[-1] is bob_conn.prepared[-1] is not carol_conn.prepared[-1]
    # The note event as documented, marked with its audience.
    event = ann_conn.of_type("note")[-1]
    assert event == {
        "type": "note",
        "room": ROOM,
        "epoch": event["epoch"],
        "seq": event["seq"],
        "ts": event["ts"],
        "from": "ann",
        "name": "ann",
        "id": "n1",
        "text": "VIP customer, be quick",
        "audience": "agent",
    }
    # It used a seq: the customer sees a gap over it.
    messages = carol_conn.of_type("message")[-2:]
    assert [m["seq"] for m in messages] == [event["seq"] - 1, event["seq"] + 1]


def test_a_batch_without_notes_is_prepared_once_for_every_member(
    conversation, clock, prepared_frames
):
    server, people = conversation()
    (carol, carol_conn), (ann, ann_conn), (_bob, bob_conn) = people.values()
    prepared_frames.clear()
    say(server, carol, "hello", "c1")
    say(server, ann, "hi", "a1")
    clock.advance(0)
    assert len(prepared_frames) == 1
    assert carol_conn.prepared[-1] is ann_conn.prepared[-1] is bob_conn.prepared[-1]


def test_a_note_is_acknowledged_after_its_event_and_a_retry_is_not_posted_again(
    conversation, clock, transcript_dir
):
    server, people = conversation()
    (_carol, carol_conn), (ann, ann_conn), (_bob, bob_conn) = people.values()
    note(server, ann, "check the refund", "n1")
    clock.advance(0)
    kinds = [f["type"] for f in ann_conn.frames]
    event = ann_conn.of_type("note")[-1]
    assert kinds.index("note") < kinds.index("ack")
    assert ann_conn.of_type("ack") == [{"type": "ack", "id": "n1", "seq": event["seq"]}]
    writes_before = carol_conn.writes
    note(server, ann, "check the refund", "n1")  # a retry
    clock.advance(0)
    assert ann_conn.of_type("ack")[-1] == {"type": "ack", "id": "n1", "seq": event["seq"]}
    assert len(bob_conn.of_type("note")) == 1 and carol_conn.writes == writes_before
    lines = (transcript_dir / f"{ROOM}.jsonl").read_text().splitlines()
    assert [json.loads(line)["type"] for line in lines].count("note") == 1


def test_only_agents_post_notes_and_only_in_conversations_they_joined(desk, enter, clock):
    server = desk()
    carol, _, _ = enter(server, "carol", ROOM)
    ann, ann_conn, _ = enter(server, "ann", "lobby", identity=identify("ann", roles=AGENT))
    assert refusal_code(note, server, carol, "psst", "n1") == errors.FORBIDDEN
    assert refusal_code(note, server, ann, "psst", "n2") == errors.NOT_JOINED
    assert refusal_code(note, server, ann, "psst", "n3", "lobby") == errors.FORBIDDEN
    clock.advance(0)
    assert ann_conn.of_type("note") == [] and ann_conn.of_type("ack") == []


def test_without_the_desk_there_are_no_notes(make_chat, enter):
    server = make_chat()
    ann, _, _ = enter(server, "ann", "lobby", identity=identify("ann", roles=AGENT))
    with pytest.raises(KeyError):
        server.handle(ann, wire.Note(room="lobby", text="x", id="n1"))


# -- history paths -----------------------------------------------------------------------------


def test_joined_history_and_a_resume_hold_the_note_for_agents_only(conversation, clock, enter):
    server, people = conversation()
    (carol, carol_conn), (ann, _), _bob = people.values()
    say(server, carol, "hello", "c1")
    clock.advance(0)
    before_note = carol_conn.of_type("message")[-1]["seq"]
    epoch = carol_conn.of_type("message")[-1]["epoch"]
    note(server, ann, "secret plan", "n1")
    say(server, ann, "hi carol", "a1")
    clock.advance(0)
    since = wire.Since(epoch, before_note)
    # carol's second tab, resuming from before the note; and a fresh join.
    for resume in (since, None):
        _s, _c, joined = enter(server, "carol", ROOM, since=resume, secret=_secret(server))
        history = [json.loads(line) for line in _lines(joined)]
        assert "secret plan" not in json.dumps(joined)
        assert "hi carol" in [event.get("text") for event in history]
        assert joined["recovered"] is (resume is not None)
    agent_view = enter(server, "dave", ROOM, since=since, identity=identify("dave", roles=AGENT))
    joined = agent_view[2]
    assert joined["recovered"] is True
    assert [(e["type"], e.get("text")) for e in joined["history"]][:2] == [
        ("note", "secret plan"),
        ("message", "hi carol"),
    ]


def _secret(server) -> str:
    """carol's user secret (open mode), for another session of hers."""
    return server.sessions._users["carol"].secret


def _lines(joined: dict) -> list[bytes]:
    return [json.dumps(event).encode() for event in joined["history"]]


def test_history_pages_skip_notes_for_the_customer_from_memory_and_from_the_files(
    desk, conversation, clock, enter
):
    sections = {"history": {"memory_events": 3, "replay_events": 3, "page_limit": 50}}
    server, people = conversation(**sections)
    (carol, _), (ann, _), _bob = people.values()
    for number in range(1, 7):
        say(server, carol, f"m{number}", f"c{number}")
        note(server, ann, f"n{number}", f"n{number}")
        clock.advance(0)

    def page(server, session, limit, before=None):
        reply = server.history(session, wire.History(ROOM, before, limit, None))
        return json.loads(reply)

    # From memory (the ring holds the latest 3 events) and from the transcript beyond it.
    for limit in (1, 4, 50):
        said = [e.get("text") for e in page(server, carol, limit)["events"]]
        assert said[-6:] == [f"m{n}" for n in range(7 - min(limit, 6), 7)]
        assert len(said) == min(limit, 9)  # 3 joins and 6 messages: the notes do not count
    agent_page = page(server, ann, 4)["events"]
    assert [e["text"] for e in agent_page] == ["m5", "n5", "m6", "n6"]
    # After a restart, from the files alone.
    server.shutdown()
    after = desk(**sections)
    carol, _, joined = enter(after, "carol", ROOM)
    assert "n6" not in json.dumps(joined) and joined["history"][-1]["text"] == "m6"
    first = page(after, carol, 2, before=joined["history"][-1]["seq"])
    assert [e["text"] for e in first["events"]] == ["m4", "m5"] and first["more"] is True
    everything = page(after, carol, 50)["events"]
    assert [e["type"] for e in everything if "text" in e] == ["message"] * 6
    dave, _, _ = enter(after, "dave", ROOM, identity=identify("dave", roles=AGENT))
    assert [
        e["text"] for e in page(after, dave, 2, before=first["events"][0]["seq"])["events"]
    ] == [
        "m3",
        "n3",
    ]


# -- the desk ----------------------------------------------------------------------------------


def test_a_note_is_no_answer_and_never_the_queue_entrys_last(conversation, clock):
    server, people = conversation()
    (carol, _), (ann, ann_conn), _bob = people.values()
    server.handle(ann, wire.Queue(ref="q"))
    say(server, carol, "is anyone there?", "c1")
    clock.advance(0)
    waiting = ann_conn.of_type("conversation")[-1]
    note(server, ann, "I'll take this one", "n1")
    clock.advance(0)
    entry = json.loads(server.handle(ann, wire.Queue(ref="q2")))["conversations"][0]
    assert entry["waiting_since"] == waiting["waiting_since"] is not None
    assert entry["last"]["text"] == "is anyone there?"
    say(server, ann, "yes, hello", "a1")
    clock.advance(0)
    entry = json.loads(server.handle(ann, wire.Queue(ref="q3")))["conversations"][0]
    assert entry["waiting_since"] is None


# -- edits and deletions -----------------------------------------------------------------------


def test_an_edit_or_delete_of_a_note_reaches_agents_only_and_the_customer_cannot_touch_it(
    conversation, clock, enter, transcript_dir
):
    server, people = conversation()
    (carol, carol_conn), (ann, ann_conn), (bob, bob_conn) = people.values()
    note(server, ann, "refund 40 EUR", "n1")
    clock.advance(0)
    target = ann_conn.of_type("note")[-1]["seq"]
    server.handle(ann, wire.Edit(room=ROOM, seq=target, text="refund 45 EUR", id="e1"))
    clock.advance(0)
    edit = bob_conn.of_type("edit")[-1]
    assert (edit["target"], edit["text"], edit["audience"]) == (target, "refund 45 EUR", "agent")
    # The customer may not edit or delete it, and is not even told it exists.
    assert (
        refusal_code(server.handle, carol, wire.Delete(room=ROOM, seq=target, id="d0"))
        == errors.NOT_FOUND
    )
    server.handle(bob, wire.Delete(room=ROOM, seq=target, id="d1"))  # any agent moderates
    clock.advance(0)
    delete = ann_conn.of_type("delete")[-1]
    assert (delete["target"], delete["audience"]) == (target, "agent")
    assert bob_conn.of_type("ack")[-1] == {"type": "ack", "id": "d1", "seq": delete["seq"]}
    assert carol_conn.of_type("edit") == carol_conn.of_type("delete") == []
    assert "EUR" not in json.dumps(carol_conn.frames)
    # Redacted like a message, everywhere: the files, and what agents are served.
    files = "".join(path.read_text() for path in transcript_dir.glob("*.jsonl"))
    assert "EUR" not in files
    _dave, _c, joined = enter(server, "dave", ROOM, identity=identify("dave", roles=AGENT))
    redacted = next(e for e in joined["history"] if e["seq"] == target)
    assert redacted["type"] == "note" and redacted["redacted"] is True and "text" not in redacted
    _carol2, _c, joined = enter(server, "carol", ROOM, secret=_secret(server))
    assert all(e["type"] in ("message", "presence") for e in joined["history"])


# -- at the protocol level ---------------------------------------------------------------------


def test_through_a_listener_the_customer_is_refused_and_never_sent_a_note(make_server):
    listener = make_server(
        authenticator=OpenAuthenticator({"ann": AGENT}), support={"enabled": True}
    )
    carol = listener.joined("carol", ROOM)
    ann = listener.joined("ann", ROOM)
    carol.send_json({"type": "note", "room": ROOM, "text": "let me in", "id": "x1"})
    ann.send_json({"type": "note", "room": ROOM, "text": "for agents", "id": "n1"})
    listener.flush()
    listener.reactor.advance(0)
    listener.flush()
    error = carol.of_type("error")[-1]
    assert (error["code"], error["ref"]) == (errors.FORBIDDEN, "x1")
    assert ann.of_type("note")[-1]["text"] == "for agents"
    assert ann.frames[-1] == {"type": "ack", "id": "n1", "seq": ann.of_type("note")[-1]["seq"]}
    assert carol.of_type("note") == [] and "for agents" not in json.dumps(carol.frames)
