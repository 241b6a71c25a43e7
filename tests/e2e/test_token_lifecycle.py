"""Token lifetime against a real daemon: an expiring token closes its connection (4001) unless
refreshed in time, and the operator's revocation list closes sessions on SIGHUP (4003) and
keeps them out."""

from __future__ import annotations

import signal
import time

import jwt
import pytest
from chatd_harness import mint_token

SECRET = b"a-test-secret-of-at-least-32-bytes-long!"


@pytest.fixture
def token_daemon(make_daemon, tmp_path):
    secret = tmp_path / "jwt-secret"
    secret.write_bytes(SECRET)
    revoked = tmp_path / "revoked"
    revoked.write_text("# revoked token ids and user ids\n")
    daemon = make_daemon(
        auth={"mode": "token", "secret_file": secret, "leeway": 0, "revoked_file": revoked}
    )
    daemon.revoked = revoked
    return daemon


def answer(client, ref: str) -> dict:
    """The reply to the frame with this id (skipping room events)."""
    return client.recv_until(lambda frame: frame.get("ref") == ref)[0]


def refused_at_hello(daemon, clients, token: str) -> str:
    client = clients(daemon.url("ws"))
    client.send({"type": "hello", "token": token, "id": "h"})
    code = client.expect(type="error", ref="h")["code"]
    assert client.expect_closed()[0] == 1008
    return code


def test_an_expiring_token_closes_its_connection_unless_refreshed(token_daemon, clients):
    daemon = token_daemon
    now = time.time()

    def short(user: str) -> str:  # all expire at the same second, 1-2 s from now
        return mint_token(daemon.config, user, ttl=2, now=now)

    expires = jwt.decode(short("x"), options={"verify_signature": False})["exp"]
    witness, expiring, refreshed, misrefreshed = (clients(daemon.url("ws")) for _ in range(4))
    witness.hello_token(mint_token(daemon.config, "witness"))
    witness.join("lobby")
    for client, user in ((expiring, "alice"), (refreshed, "carl"), (misrefreshed, "dora")):
        client.hello_token(short(user))
        client.join("lobby")
        client.say("lobby", "before my token expires", "s-1")

    # A fresh token for the same user: the session now ends when that one does.
    fresh = mint_token(daemon.config, "carl", ttl=60)
    refreshed.send({"type": "refresh", "token": fresh, "id": "rf-1"})
    new_exp = jwt.decode(fresh, options={"verify_signature": False})["exp"]
    assert answer(refreshed, "rf-1") == {"type": "refreshed", "expires": new_exp, "ref": "rf-1"}
    # An expired token is no refresh (the connection stays, with the expiry it has).
    refreshed.send({"type": "refresh", "token": short("carl")[:-2] + "xx", "id": "rf-2"})
    assert answer(refreshed, "rf-2")["code"] == "auth_failed"
    expired = mint_token(daemon.config, "carl", ttl=-10)
    refreshed.send({"type": "refresh", "token": expired, "id": "rf-3"})
    assert answer(refreshed, "rf-3")["code"] == "token_expired"
    # Nor is a token for someone else (the connection stays, and so does its expiry).
    misrefreshed.send({"type": "refresh", "token": mint_token(daemon.config, "eve"), "id": "x"})
    assert answer(misrefreshed, "x")["code"] == "auth_failed"

    for client in (expiring, misrefreshed):
        code, _reason = client.expect_closed(timeout=5)
        assert code == 4001
        assert time.time() >= expires - 0.05, "closed before the token expired"
    leaves = []
    for _ in range(2):
        leave, _events = witness.recv_until(lambda frame: frame.get("event") == "leave")
        leaves.append((leave["user"], leave["event"]))
    assert sorted(leaves) == [("alice", "leave"), ("dora", "leave")]
    # carl's connection outlived the first token.
    assert time.time() > expires
    message, _ack = refreshed.say("lobby", "still here after the first expiry", "s-2")
    assert witness.next_event() == message


def test_revoked_users_and_tokens_are_closed_on_sighup_and_kept_out(token_daemon, clients):
    daemon = token_daemon
    url = daemon.url("ws")

    def session(user: str, jti: str):
        client = clients(url)
        client.hello_token(mint_token(daemon.config, user, token_id=jti))
        client.join("lobby", own_presence=False)
        return client

    witness = session("witness", "w-1")
    mallory = [session("mallory", "m-1"), session("mallory", "m-2")]
    eve_leaked, eve_other = session("eve", "e-1"), session("eve", "e-2")

    def revoke(entry: str) -> None:
        with daemon.revoked.open("a") as revoked:
            revoked.write(f"{entry}  # added by the test\n")
        daemon.process.send_signal(signal.SIGHUP)

    # A user id: every session of that user is closed.
    revoke("mallory")
    for client in mallory:
        assert client.expect_closed()[0] == 4003
    leave, _events = witness.recv_until(lambda frame: frame.get("event") == "leave")
    assert leave["user"] == "mallory"
    assert refused_at_hello(daemon, clients, mint_token(daemon.config, "mallory")) == "auth_failed"

    # A token id: that token's session only.
    revoke("e-1")
    assert eve_leaked.expect_closed()[0] == 4003
    message, _ack = eve_other.say("lobby", "my other token still works", "e-1")
    assert witness.next_event() == message  # and eve is still a member: no leave before it
    token = mint_token(daemon.config, "eve", token_id="e-1")
    assert refused_at_hello(daemon, clients, token) == "auth_failed"
    eve_again = clients(url)
    eve_again.hello_token(mint_token(daemon.config, "eve", token_id="e-3"))
    # Others were never touched.
    message, _ack = witness.say("lobby", "still here", "w-1")
    assert eve_other.next_event() == message
    presence = [(e["user"], e["event"]) for e in daemon.transcript("lobby") if "event" in e]
    assert presence.count(("mallory", "leave")) == 1
    assert ("eve", "leave") not in presence
