"""Webhook delivery on an injected clock with a stand-in HTTP client (the real one, treq, is
exercised end to end in tests/e2e/test_webhook_delivery.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from dataclasses import replace

import pytest
from desk_stand_in import SharedDesk
from twisted.internet.defer import Deferred, fail

from chatd import wire
from chatd.auth import Identity
from chatd.config import WebhookEndpoint
from chatd.rooms import Draft, message_draft
from chatd.webhook_state import cursor_path, load_cursors, status_path
from chatd.webhooks import Sender, WebhookMetrics, Webhooks, sign

SECRET = b"s" * 32


class Receiver:
    """Stands in for treq: records each POST and answers when the test says so."""

    def __init__(self):
        self.posts: list[tuple[str, bytes, dict]] = []
        self.pending: list[Deferred] = []
        self.auto: int | None = 200  # answer at once with this status; None: leave pending

    def __call__(self, url, body, headers, timeout):
        self.posts.append((url, body, headers))
        if self.auto is None:
            self.pending.append(Deferred())
            return self.pending[-1]
        result = Deferred()
        result.callback(self.auto)
        return result

    def events(self) -> list[dict]:
        return [event for _u, body, _h in self.posts for event in json.loads(body)["events"]]


@pytest.fixture
def hooks(make_chat, tmp_path, clock):
    def make(events=("message", "presence", "conversation", "unattended"), receiver=None, **cfg):
        server = make_chat()
        receiver = receiver or Receiver()
        endpoint = WebhookEndpoint("crm", "http://127.0.0.1:1/hook", tmp_path / "s", events)
        from chatd.config import load_config

        config = replace(
            load_config(None).webhooks,
            state_directory=tmp_path / "state",
            endpoints=(endpoint,),
            **cfg,
        )
        config.state_directory.mkdir(exist_ok=True)
        sender = Sender(
            endpoint,
            [SECRET],
            config,
            server.store,
            clock,
            receiver,
            WebhookMetrics(server.metrics.registry),
            random.Random(1),
        )
        webhooks = Webhooks(config, [sender], server.store)
        webhooks.attach(server)
        return server, webhooks, sender, receiver

    return make


def post(server, room_name, text, sender="alice", client_id=None):
    room = server.directory.open_for_server(room_name)
    server.post(room, message_draft(sender, sender, client_id or text, text, server.now()))


def test_a_new_endpoint_gets_events_from_now_on_signed_in_order(hooks, clock):
    server, webhooks, sender, receiver = hooks()
    post(server, "lobby", "before")
    clock.advance(0)
    webhooks.start()
    clock.advance(0)
    assert receiver.posts == []
    for n in range(3):
        post(server, "lobby", f"m{n}")
    clock.advance(0)
    clock.advance(0)
    _url, body, headers = receiver.posts[0]
    timestamp = headers[b"x-chatd-timestamp"][0]
    expected = hmac.new(SECRET, timestamp + b"." + body, hashlib.sha256).hexdigest()
    assert headers[b"x-chatd-signature"] == [f"v1={expected}".encode()]
    events = receiver.events()
    assert [e["event"]["text"] for e in events] == ["m0", "m1", "m2"]
    epoch = server.rooms["lobby"].epoch
    assert [e["id"] for e in events] == [f"lobby:{epoch}:{n}" for n in (2, 3, 4)]
    assert sender.lag == 0


def test_signature_lists_one_per_secret():
    assert sign([b"a" * 16, b"b" * 16], 5, b"{}").count("v1=") == 2


def test_a_dead_receiver_costs_no_queue_and_gets_everything_later(hooks, clock):
    server, webhooks, sender, receiver = hooks()
    webhooks.start()
    receiver.auto = 503
    for n in range(50):
        post(server, "lobby", f"m{n}")
        clock.advance(0)
    assert sender.failures >= 1 and sender.last_error == "HTTP 503"
    assert list(sender.behind) == ["lobby"] and sender.lag == 50
    # Backoff: retry_min doubled per failure, with jitter between half and all of it.
    delays = [sender.retry_delay(n) for n in range(1, 12)]
    assert all(
        0.5 * min(300, 2 ** (n - 1)) <= d <= min(300, 2 ** (n - 1)) for n, d in enumerate(delays, 1)
    )
    receiver.auto = 200
    before = len(receiver.posts)
    clock.advance(400)
    clock.advance(0)
    texts = [e["event"]["text"] for e in receiver.events()[before:] if e["type"] == "message"]
    assert texts == [f"m{n}" for n in range(50)]
    assert sender.lag == 0 and sender.failures == 0


def test_the_cursor_survives_a_restart(hooks, clock, tmp_path):
    server, webhooks, _sender, _receiver = hooks()
    webhooks.start()
    post(server, "lobby", "one")
    clock.advance(0)
    clock.advance(1)  # the cursor is saved within a second
    epoch = server.rooms["lobby"].epoch
    assert load_cursors(cursor_path(tmp_path / "state", "crm"))["lobby"] == (epoch, 1)
    webhooks.stop()
    post(server, "lobby", "while stopped")
    clock.advance(0)
    _s, again, _sender, receiver2 = hooks()
    again.start()
    clock.advance(0)
    assert [e["event"]["text"] for e in receiver2.events()] == ["while stopped"]


def test_unwanted_types_pass_the_cursor(hooks, clock):
    server, webhooks, sender, receiver = hooks(events=("conversation",))
    webhooks.start()
    post(server, "lobby", "not wanted")
    clock.advance(0)
    clock.advance(0)
    assert receiver.posts == [] and sender.lag == 0


@pytest.mark.parametrize("events", [("message",), ("message", "note")])
def test_notes_go_only_to_endpoints_that_name_them_and_are_marked(hooks, clock, events):
    server, webhooks, _sender, receiver = hooks(events=events)
    webhooks.start()
    room = server.directory.open_for_server("support-carol")
    fields = {"from": "ann", "name": "ann", "id": "n1", "text": "VIP"}
    server.post(room, Draft("note", fields, "ann", server.now(), "n1", audience="agent"))
    post(server, "support-carol", "hello", sender="carol")
    clock.advance(0)
    clock.advance(0)
    delivered = [(item["type"], item["event"].get("audience")) for item in receiver.events()]
    if "note" in events:
        assert delivered == [("note", "agent"), ("message", None)]
    else:
        assert delivered == [("message", None)]


def test_a_failed_post_call_is_a_failure_too(hooks, clock):
    def broken(*_args):
        return fail(ValueError("bad url"))

    server, webhooks, sender, _r = hooks(receiver=broken)
    webhooks.start()
    post(server, "lobby", "x")
    clock.advance(0)
    clock.advance(0)
    assert sender.failures == 1 and "bad url" in sender.last_error
    status = json.loads(status_path(sender._config.state_directory, "crm").read_text())
    assert status["lag"] == 1 and status["next_retry_at"] is not None


def test_one_delivery_in_flight_keeps_each_room_in_order(hooks, clock):
    receiver = Receiver()
    receiver.auto = None
    server, webhooks, _sender, _r = hooks(receiver=receiver, batch_size=2)
    webhooks.start()
    for n in range(3):
        post(server, "lobby", f"a{n}")
        post(server, "other", f"b{n}")
    clock.advance(0)
    clock.advance(0)
    while receiver.pending:
        assert len(receiver.pending) == 1
        receiver.pending.pop().callback(204)
        clock.advance(0)
    by_room: dict[str, list] = {}
    for event in receiver.events():
        by_room.setdefault(event["room"], []).append(event["event"]["seq"])
    assert by_room == {"lobby": [1, 2, 3], "other": [1, 2, 3]}


def test_events_after_reads_forward_across_rotations(make_chat, clock):
    server = make_chat(transcripts={"rotate_size": 300})
    for n in range(10):
        post(server, "lobby", f"message number {n}")
        clock.advance(0)
    store = server.store
    epoch = server.rooms["lobby"].epoch
    assert len(list(store.directory.glob("lobby*.jsonl"))) > 2
    assert [e.seq for e in store.events_after("lobby", epoch, 3, 4)] == [4, 5, 6, 7]
    assert [e.seq for e in store.events_after("lobby", epoch, 8, 100)] == [9, 10]
    assert store.events_after("lobby", epoch, 10, 100) == []
    # An unknown epoch (the room was made anew) or no cursor: from the start.
    assert [e.seq for e in store.events_after("lobby", None, 0, 2)] == [1, 2]
    assert [e.seq for e in store.events_after("lobby", "other", 7, 2)] == [1, 2]


# -- unattended ------------------------------------------------------------------------------


@pytest.fixture
def desk(make_chat, enter):
    def make(after=60.0):
        server = make_chat(
            support={"enabled": True, "trial_agents": ("ann",), "unattended_after": after}
        )
        _s, carol, _j = enter(server, "carol", "support-carol")
        return server, carol

    return make


def say(server, session_name, text, room="support-carol"):
    session = server.sessions.of_user(session_name)[0]
    server.say(session, wire.Say(room=room, text=text, id=text))


def test_unattended_fires_once_when_no_agent_answers(desk, clock):
    server, carol = desk()
    say(server, "carol", "hello?")
    clock.advance(0)
    clock.advance(59)
    assert carol.of_type("unattended") == []
    clock.advance(1)
    clock.advance(0)
    say(server, "carol", "anyone?")
    clock.advance(120)
    clock.advance(0)
    fired = carol.of_type("unattended")
    assert len(fired) == 1
    assert fired[0]["customer"] == "carol" and fired[0]["after"] == 60.0


def test_unattended_does_not_fire_when_an_agent_answers(desk, clock, make_connection):
    server, carol = desk()
    ann = Identity("ann", "ann", frozenset({"agent"}), None, None)
    session, _welcome = server.hello(make_connection(), ann, wire.Hello(name="ann", ref=None))
    server.join(session, wire.Join(room="support-carol", since=None, ref=None))
    say(server, "carol", "hello?")
    clock.advance(30)
    say(server, "ann", "hi carol")
    clock.advance(0)
    clock.advance(120)
    assert carol.of_type("unattended") == []


def test_an_agents_note_is_no_answer(desk, clock, enter):
    server, carol = desk()
    agent = Identity("ann", "ann", frozenset({"agent"}), None, None)
    ann, _c, _j = enter(server, "ann", "support-carol", identity=agent)
    say(server, "carol", "hello?")
    clock.advance(30)
    server.handle(ann, wire.Note(room="support-carol", text="mine", id="n1"))
    clock.advance(0)
    clock.advance(60)
    clock.advance(0)
    assert len(carol.of_type("unattended")) == 1


def test_a_bot_message_is_no_answer(desk, clock):
    server, carol = desk()
    say(server, "carol", "hello?")
    clock.advance(1)
    room = server.rooms["support-carol"]
    draft = message_draft("shopbot", "shopbot", "b1", "your order shipped", server.now())
    draft.fields["bot"] = True
    server.post(room, draft)
    clock.advance(60)
    clock.advance(0)
    assert len(carol.of_type("unattended")) == 1


def test_unattended_is_written_only_by_the_node_that_leads_the_desk(desk, clock):
    server, carol = desk()
    server.desk.shared = shared = SharedDesk(leading=False)
    say(server, "carol", "hello?")
    clock.advance(0)
    clock.advance(60)
    clock.advance(0)
    assert carol.of_type("unattended") == []  # another node's duty
    shared.leading = True  # that node died and this one took the lease over
    clock.advance(5)
    clock.advance(0)
    assert len(carol.of_type("unattended")) == 1


def test_unattended_written_by_the_leading_node_is_not_written_again(desk, clock):
    server, carol = desk()
    server.desk.shared = shared = SharedDesk(leading=False)
    say(server, "carol", "hello?")
    clock.advance(0)
    clock.advance(60)
    room = server.directory.find("support-carol")
    fields = {"customer": "carol", "since": "x", "after": 60.0}  # as the leader wrote it
    server.post(room, Draft("unattended", fields, None, server.now()))
    clock.advance(0)
    shared.leading = True
    clock.advance(30)
    clock.advance(0)
    assert len(carol.of_type("unattended")) == 1
