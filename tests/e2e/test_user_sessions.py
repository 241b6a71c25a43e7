"""One user, many connections, against a real daemon: sessions in open and token mode, presence
per user, acks per connection, resuming a half-open session, and the session cap."""

from __future__ import annotations

import time
import urllib.request

import pytest
from chatd_harness import RECV_TIMEOUT, assert_message, assert_presence, mint_token, wait_for

SECRET = b"a-test-secret-of-at-least-32-bytes-long!"


@pytest.fixture(params=["open", "token"])
def mode(request) -> str:
    return request.param


@pytest.fixture
def chat(make_daemon, tmp_path, mode):
    """A daemon in `mode`, and `hello(client, user, **fields)` that welcomes a client as user
    (open mode: by name; token mode: with a fresh token whose display name is user.title())."""
    sections = {}
    if mode == "token":
        secret = tmp_path / "jwt-secret"
        secret.write_bytes(SECRET)
        sections["auth"] = {"mode": "token", "secret_file": secret, "leeway": 0}
    daemon = make_daemon(**sections)
    counter = iter(range(1_000_000))

    def hello(client, user: str, **fields) -> dict:
        if mode == "open":
            return client.hello(user, **fields)
        token = mint_token(daemon.config, user, name=user.title(), token_id=f"t-{next(counter)}")
        return client.hello_token(token, **fields)

    def display(user: str) -> str:
        return user if mode == "open" else user.title()

    return daemon, hello, display


def sessions_gauge(daemon) -> float:
    url = f"http://127.0.0.1:{daemon.ports['metrics']}/metrics"
    with urllib.request.urlopen(url, timeout=RECV_TIMEOUT) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("chatd_sessions "):
                return float(line.split()[1])
    raise AssertionError("no chatd_sessions in /metrics")


def test_two_connections_of_one_user(chat, clients, mode):
    daemon, hello, display = chat
    first, second, bob = (clients(daemon.url(kind)) for kind in ("ws", "wss", "ws"))
    welcome = hello(first, "alice")
    if mode == "open":
        # The name alone does not join alice's sessions; her secret does.
        for fields in ({}, {"secret": "not-her-secret"}):
            second.send({"type": "hello", "name": "alice", "id": "h-1", **fields})
            assert second.expect(type="error", ref="h-1")["code"] == "name_taken"
        other = hello(second, "alice", secret=welcome["secret"])
    else:
        assert "secret" not in welcome
        other = hello(second, "alice")  # another token for the same sub
    assert (other["user"], other["name"], other["resumed"]) == ("alice", display("alice"), False)
    assert other["session"] != welcome["session"]
    hello(bob, "bob")

    epoch = bob.join("lobby")["epoch"]
    first.join("lobby")
    assert_presence(
        bob.next_event(), room="lobby", epoch=epoch, seq=2, user="alice", event="join",
        name=display("alice"),
    )  # fmt: skip
    # alice's second connection joins: no presence event (she is a member already).
    second.send({"type": "join", "room": "lobby"})
    joined = second.expect(type="joined", room="lobby", seq=2)
    assert joined["members"] == ["bob", "alice"]
    assert joined["names"] == {"bob": display("bob"), "alice": display("alice")}

    # What one connection says reaches both, and only the sender's connection gets the ack:
    # each client's next frames are exactly these (a presence or a stray ack would show).
    first.send({"type": "say", "room": "lobby", "text": "from the laptop", "id": "m-1"})
    message = first.recv()
    assert_message(
        message, room="lobby", epoch=epoch, seq=3, sender="alice", id="m-1",
        text="from the laptop", name=display("alice"),
    )  # fmt: skip
    assert first.recv() == {"type": "ack", "id": "m-1", "seq": 3}
    assert second.recv() == message
    assert bob.recv() == message
    second.send({"type": "say", "room": "lobby", "text": "from the phone", "id": "m-2"})
    reply = second.expect(type="message", id="m-2", seq=4, text="from the phone")
    assert second.recv() == {"type": "ack", "id": "m-2", "seq": 4}
    assert first.recv() == reply
    assert bob.recv() == reply
    # A retry is recognised across the user's connections: acked with the original seq.
    second.send({"type": "say", "room": "lobby", "text": "from the laptop", "id": "m-1"})
    assert second.recv() == {"type": "ack", "id": "m-1", "seq": 3}

    # Closing one connection: alice is still in the room, and nobody is told otherwise.
    first.close()
    wait_for(lambda: sessions_gauge(daemon) == 2, 5, "the first connection's session to end")
    bob.send({"type": "who", "room": "lobby", "id": "w-1"})
    assert bob.expect(type="members", ref="w-1")["members"] == ["bob", "alice"]
    marker, _ack = second.say("lobby", "still here", "m-3")
    assert bob.recv() == marker and marker["seq"] == 5

    # Closing the last one: now alice leaves.
    second.close()
    assert_presence(
        bob.next_event(), room="lobby", epoch=epoch, seq=6, user="alice", event="leave",
        name=display("alice"),
    )  # fmt: skip
    presence = [
        (event["user"], event["event"])
        for event in daemon.transcript("lobby")
        if event["type"] == "presence"
    ]
    assert presence == [("bob", "join"), ("alice", "join"), ("alice", "leave")]


def test_resume_replaces_a_half_open_connection_at_once(chat, clients, mode):
    """The old connection is left as a network switch leaves it: no close frame, no FIN, the
    server's side still open. Resuming replaces it at once, without a leave/join flicker."""
    daemon, hello, _display = chat
    old, bob = clients(daemon.url("wss")), clients(daemon.url("ws"))
    welcome = hello(old, "alice")
    hello(bob, "bob")
    epoch = bob.join("lobby")["epoch"]
    old.join("lobby")
    bob.next_event()  # alice joined
    said, _ack = old.say("lobby", "before the switch", "a-1")
    assert bob.next_event() == said
    # alice's network goes away; bob says something she misses.
    missed, _ack = bob.say("lobby", "are you there?", "b-1")

    fresh = clients(daemon.url("wss"))
    started = time.monotonic()
    resumed = hello(fresh, "alice", resume=welcome["resume"])
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, elapsed
    assert resumed["resumed"] is True
    assert (resumed["user"], resumed["session"]) == ("alice", welcome["session"])
    assert resumed["resume"] != welcome["resume"]
    # The half-open connection is closed by the server with 4000 (replaced).
    code, _reason = old.expect_closed()
    assert code == 4000

    # The session kept its rooms: re-joining with since gets what was missed, and no presence.
    fresh.send({"type": "join", "room": "lobby", "since": {"epoch": epoch, "seq": said["seq"]}})
    joined = fresh.expect(type="joined", room="lobby", recovered=True)
    assert joined["history"] == [missed]
    assert joined["members"] == ["bob", "alice"]
    message, _ack = fresh.say("lobby", "back on another network", "a-2")
    assert bob.next_event() == message  # no leave, no join in between
    assert message["seq"] == missed["seq"] + 1

    # The old resume secret is spent.
    stranger = clients(daemon.url("ws"))
    if mode == "open":
        stranger.send({"type": "hello", "name": "alice", "resume": welcome["resume"], "id": "h"})
        assert stranger.expect(type="error", ref="h")["code"] == "name_taken"
    else:
        again = hello(stranger, "alice", resume=welcome["resume"])
        assert again["resumed"] is False and again["session"] != welcome["session"]
        stranger.close()
        wait_for(lambda: sessions_gauge(daemon) == 2, 5, "the extra session to end")

    fresh.close()
    leave = bob.next_event()
    assert (leave["type"], leave["user"], leave["event"]) == ("presence", "alice", "leave")
    alice_presence = [
        event["event"] for event in daemon.transcript("lobby") if event.get("user") == "alice"
    ]
    assert alice_presence == ["join", "leave"]


def test_a_dropped_connection_frees_the_user_at_once(daemon, clients):
    """A connection reset (no close frame) ends the session when the server sees it: the
    others see the leave, and the name is free again without the secret."""
    alice, bob = clients(daemon.url("ws")), clients(daemon.url("wss"))
    welcome = alice.hello("alice")
    bob.hello("bob")
    bob.join("lobby")
    alice.join("lobby")
    bob.next_event()
    alice.abort()
    leave = bob.next_event(timeout=5)
    assert (leave["user"], leave["event"]) == ("alice", "leave")
    # Its resume secret matches no live session: the hello is an ordinary one.
    back = clients(daemon.url("ws"))
    again = back.hello("alice", resume=welcome["resume"])
    assert again["resumed"] is False and again["session"] != welcome["session"]
    assert again["secret"] != welcome["secret"]


def test_over_the_session_cap_is_refused_and_nobody_is_dropped(make_daemon, clients):
    daemon = make_daemon(auth={"max_sessions_per_user": 2})
    first, second, third = (clients(daemon.url("ws")) for _ in range(3))
    secret = first.hello("alice")["secret"]
    second.hello("alice", secret=secret)
    third.send({"type": "hello", "name": "alice", "secret": secret, "id": "h-3"})
    assert third.expect(type="error", ref="h-3")["code"] == "too_many_sessions"
    # The refused connection stays open, unwelcomed; the two sessions go on.
    third.send({"type": "join", "room": "lobby", "id": "j"})
    assert third.expect(type="error", ref="j")["code"] == "hello_required"
    first.join("lobby")
    second.join("lobby", own_presence=False)
    message, _ack = first.say("lobby", "both still here", "a-1")
    assert second.recv() == message
    # Once one closes, there is room for another.
    second.close()
    wait_for(lambda: sessions_gauge(daemon) == 1, 5, "the second session to end")
    assert third.hello("alice", secret=secret)["resumed"] is False
