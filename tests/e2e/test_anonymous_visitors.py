"""Anonymous visitors against a real daemon: a visitor says hello with no token and no name,
writes, goes away, and after a restart of the daemon comes back with its id and secret as the
same user, to the same conversation and its history; agents still sign in with tokens."""

from __future__ import annotations

import stat

from chatd_harness import mint_token

SECRET = b"a-test-secret-of-at-least-32-bytes-long!"


def test_a_visitor_comes_back_after_a_restart_to_the_same_conversation(
    make_daemon, clients, tmp_path
):
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_bytes(SECRET)
    daemon = make_daemon(
        auth={"mode": "token", "secret_file": secret_file},
        support={"enabled": "yes", "visitors": "anonymous"},
    )
    visitor = clients(daemon.url("ws"))
    visitor.send({"type": "hello", "visitor": True})
    welcome = visitor.expect(type="welcome")
    user, secret, room = welcome["user"], welcome["secret"], welcome["support_room"]
    assert user.startswith("v-") and welcome["roles"] == [] and room == f"support-{user}"
    visitor.name = user
    visitor.join(room)
    visitor.send({"type": "profile", "name": "Ann Lee", "email": "ann@example.com", "id": "p1"})
    profile = visitor.expect(type="profile", room=room, name="Ann Lee")
    visitor.expect(type="ack", id="p1", seq=profile["seq"])
    visitor.say(room, "where is my parcel?", "m1")
    visitor.close()

    key = daemon.transcript_path("x").parent / "visitor.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    daemon.restart()

    back = clients(daemon.url("ws"))
    back.send({"type": "hello", "visitor": True, "name": user, "secret": secret})
    again = back.expect(type="welcome")
    assert (again["user"], again["support_room"], again["secret"]) == (user, room, secret)
    back.name = user
    history = back.join(room)["history"]
    said = [(e["from"], e["text"]) for e in history if e["type"] == "message"]
    assert said == [(user, "where is my parcel?")]

    # A forged secret is refused and closed; an agent with a token sees the conversation.
    forger = clients(daemon.url("ws"))
    forger.send({"type": "hello", "visitor": True, "name": user, "secret": secret[:-2] + "xx"})
    assert forger.expect(type="error")["code"] == "auth_failed"
    assert forger.expect_closed()[0] == 1008
    agent = clients(daemon.url("ws"))
    agent.hello_token(mint_token(daemon.config, "bob", roles=["agent"], name="Bob"))
    agent.send({"type": "queue", "id": "q"})
    queue, _before = agent.recv_until(lambda frame: frame["type"] == "queue")
    [entry] = queue["conversations"]
    assert (entry["room"], entry["customer_name"], entry["customer_email"]) == (
        room,
        "Ann Lee",
        "ann@example.com",
    )


def test_with_visitors_token_an_anonymous_hello_is_refused(make_daemon, clients):
    daemon = make_daemon(support={"enabled": "yes"})
    visitor = clients(daemon.url("ws"))
    visitor.send({"type": "hello", "visitor": True})
    error = visitor.expect(type="error")
    assert error["code"] == "auth_failed" and "visitors = token" in error["message"]
