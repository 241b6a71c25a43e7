"""Token lifecycle: sessions close when their token expires unless refreshed; revocations
close live sessions and refuse new ones; display names come from the token.

Real JWTs (HS256, `tokens` fixture) verified by TokenAuthenticator; the server's clock decides
when a session's time is up.
"""

import json

import pytest

from chatd import errors, wire
from chatd.errors import ChatError

TTL = 60.0


@pytest.fixture
def revoked_file(tmp_path):
    path = tmp_path / "revoked"
    path.write_text("# nobody yet\n")
    return path


def welcome(server, connection, identity, **fields):
    return server.hello(connection, identity, wire.Hello(name=None, ref=None, **fields))


def code_of(call, *args):
    with pytest.raises(ChatError) as caught:
        call(*args)
    return caught.value


# -- expiry ------------------------------------------------------------------------------------


def test_a_session_closes_with_4001_when_its_token_expires_plus_leeway(
    make_chat, make_connection, tokens, clock
):
    server = make_chat(auth=tokens.section)
    start = clock.seconds()
    identity = tokens.identity("alice", ttl=TTL)
    session, _ = welcome(server, connection := make_connection(), identity)
    assert session.expires_at == identity.expires_at == int(start + TTL) + tokens.LEEWAY
    clock.advance(session.expires_at - clock.seconds() - 0.01)
    assert connection.closed is None
    clock.advance(0.01)
    assert connection.closed == (errors.CLOSE_TOKEN_EXPIRED, "token expired")
    assert errors.CLOSE_TOKEN_EXPIRED == 4001


def test_each_session_of_a_user_expires_with_its_own_token(
    make_chat, make_connection, tokens, clock
):
    server = make_chat(auth=tokens.section)
    short, _ = welcome(server, short_lived := make_connection(), tokens.identity("a", ttl=TTL))
    welcome(server, long_lived := make_connection(), tokens.identity("a", ttl=10 * TTL))
    clock.advance(short.expires_at - clock.seconds())
    assert (short_lived.closed[0], long_lived.closed) == (errors.CLOSE_TOKEN_EXPIRED, None)


def test_a_refresh_for_the_same_sub_postpones_the_close(make_chat, make_connection, tokens, clock):
    server = make_chat(auth=tokens.section)
    session, _ = welcome(server, connection := make_connection(), tokens.identity("alice"))
    fresh = tokens.identity("alice", ttl=10 * TTL, name="Alice Again", roles=["agent"])
    old_expiry = session.expires_at
    clock.advance(TTL / 2)
    reply = json.loads(server.refresh(session, fresh, "r1"))
    assert reply == {"type": "refreshed", "expires": fresh.expires_at, "ref": "r1"}
    assert (session.name, session.roles) == ("Alice Again", frozenset({"agent"}))
    clock.advance(old_expiry - clock.seconds() + 1)
    assert connection.closed is None
    clock.advance(fresh.expires_at - clock.seconds())
    assert connection.closed[0] == errors.CLOSE_TOKEN_EXPIRED


def test_a_refresh_for_another_sub_is_refused_and_does_not_postpone(
    make_chat, make_connection, tokens, clock
):
    server = make_chat(auth=tokens.section)
    session, _ = welcome(server, connection := make_connection(), tokens.identity("alice"))
    expiry = session.expires_at
    mallory = tokens.identity("mallory", ttl=10 * TTL)
    refused = code_of(server.refresh, session, mallory, "r9")
    assert (refused.code, refused.ref) == (errors.AUTH_FAILED, "r9")
    assert (session.user, session.expires_at) == ("alice", expiry)
    clock.advance(expiry - clock.seconds())
    assert connection.closed[0] == errors.CLOSE_TOKEN_EXPIRED


def test_a_session_that_ended_is_not_closed_again_at_its_expiry(
    make_chat, make_connection, tokens, clock
):
    server = make_chat(auth=tokens.section)
    session, _ = welcome(server, connection := make_connection(), tokens.identity("alice"))
    server.disconnect(session)
    clock.advance(10 * TTL)
    assert connection.closed is None
    assert clock.getDelayedCalls() and all(
        call.func != server._expired for call in clock.getDelayedCalls()
    )


def test_open_mode_sessions_never_expire(make_chat, make_connection, hello, clock):
    server = make_chat()
    session = hello(server, connection := make_connection(), "alice")
    clock.advance(365 * 86400)
    assert (session.expires_at, connection.closed) == (None, None)


# -- revocation --------------------------------------------------------------------------------


def test_reloading_revocations_closes_matching_sessions_by_jti_and_by_user(
    make_chat, make_connection, tokens, revoked_file
):
    server = make_chat(auth={**tokens.section, "revoked_file": revoked_file})
    laptop, _ = welcome(server, make_connection(), tokens.identity("alice", token_id="t-laptop"))
    phone, _ = welcome(server, make_connection(), tokens.identity("alice", token_id="t-phone"))
    bob, _ = welcome(server, make_connection(), tokens.identity("bob", token_id="t-bob"))
    revoked_file.write_text("t-laptop  # lost laptop\n")
    server.reload_revocations()
    assert [s.connection.closed for s in (laptop, phone, bob)] == [
        (errors.CLOSE_REVOKED, "revoked"),
        None,
        None,
    ]
    revoked_file.write_text("t-laptop\n\n# and bob altogether\nbob\n")
    server.reload_revocations()
    assert [s.connection.closed for s in (phone, bob)] == [None, (errors.CLOSE_REVOKED, "revoked")]
    assert errors.CLOSE_REVOKED == 4003


def test_a_revoked_token_or_user_is_refused_at_hello_and_at_refresh(
    make_chat, make_connection, tokens, revoked_file
):
    revoked_file.write_text("t-stolen\nmallory\n")
    server = make_chat(auth={**tokens.section, "revoked_file": revoked_file})
    stolen = tokens.identity("alice", token_id="t-stolen")
    assert code_of(welcome, server, make_connection(), stolen).code == errors.AUTH_FAILED
    mallory = tokens.identity("mallory", token_id="t-other")
    assert code_of(welcome, server, make_connection(), mallory).code == errors.AUTH_FAILED
    session, _ = welcome(server, make_connection(), tokens.identity("alice", token_id="t-ok"))
    refused = code_of(server.refresh, session, stolen, "r")
    assert (refused.code, refused.ref) == (errors.AUTH_FAILED, "r")
    assert server.sessions.session_count == 1


def test_an_unreadable_revocation_list_keeps_the_previous_one(
    make_chat, make_connection, tokens, revoked_file, log_events
):
    revoked_file.write_text("mallory\n")
    server = make_chat(auth={**tokens.section, "revoked_file": revoked_file})
    alice, _ = welcome(server, make_connection(), tokens.identity("alice"))
    revoked_file.unlink()
    server.reload_revocations()
    assert alice.connection.closed is None
    assert server.revocations.revokes("mallory", None)
    assert any("cannot read the revocation list" in e.get("log_format", "") for e in log_events)


# -- display names come from the token ---------------------------------------------------------


def test_events_and_member_lists_carry_the_tokens_name_never_the_clients(
    make_chat, make_connection, tokens, clock, transcript_dir
):
    server = make_chat(auth=tokens.section)
    identity = tokens.identity("u-123", name="Ada Lovelace")
    session, hello = server.hello(
        connection := make_connection(), identity, wire.Hello(name="mallory", ref=None)
    )
    assert (hello["user"], hello["name"]) == ("u-123", "Ada Lovelace")
    joined = json.loads(server.join(session, wire.Join("lobby", None, None)))
    assert (joined["members"], joined["names"]) == (["u-123"], {"u-123": "Ada Lovelace"})
    server.say(session, wire.Say("lobby", "hello", "c1"))
    clock.advance(0)
    presence, message = connection.frames[:2]
    assert (presence["user"], presence["name"]) == ("u-123", "Ada Lovelace")
    assert (message["from"], message["name"]) == ("u-123", "Ada Lovelace")
    members = json.loads(server.who(session, wire.Who("lobby", None)))
    assert members["names"] == {"u-123": "Ada Lovelace"}
    lines = [
        json.loads(line)
        for line in (transcript_dir / "lobby.jsonl").read_bytes().split(b"\n")
        if line
    ]
    assert {line["name"] for line in lines} == {"Ada Lovelace"}


# -- through the protocol ----------------------------------------------------------------------


@pytest.fixture
def token_server(make_server, tokens, reactor, revoked_file):
    tokens.use(reactor)
    return make_server(
        authenticator=tokens.authenticator, auth={**tokens.section, "revoked_file": revoked_file}
    )


def token_client(server, token: str, **hello):
    client = server.connect()
    client.send_json({"type": "hello", "token": token, **hello})
    server.flush()
    return client


def test_the_client_of_an_expired_token_sees_close_code_4001(token_server, tokens, reactor):
    client = token_client(token_server, tokens.mint("alice", ttl=TTL, name="Alice"))
    [welcome] = client.frames
    assert (welcome["type"], welcome["user"], welcome["name"]) == ("welcome", "alice", "Alice")
    assert "secret" not in welcome
    fresh = tokens.mint("alice", ttl=3 * TTL)
    reactor.advance(TTL / 2)
    client.send_json({"type": "refresh", "token": fresh, "id": "r1"})
    token_server.flush()
    assert (client.frames[-1]["type"], client.frames[-1]["ref"]) == ("refreshed", "r1")
    reactor.advance(TTL + tokens.LEEWAY)
    token_server.flush()
    assert client.close_code is None
    reactor.advance(2 * TTL)
    token_server.flush()
    assert client.close_code == 4001


def test_a_refresh_for_another_sub_is_an_error_frame_and_the_session_still_expires(
    token_server, tokens, reactor
):
    client = token_client(token_server, tokens.mint("alice", ttl=TTL))
    client.send_json({"type": "refresh", "token": tokens.mint("bob", ttl=9 * TTL), "id": "r2"})
    token_server.flush()
    reply = client.frames[-1]
    assert (reply["type"], reply["code"], reply["ref"]) == ("error", errors.AUTH_FAILED, "r2")
    assert client.close_code is None
    reactor.advance(TTL + tokens.LEEWAY)
    token_server.flush()
    assert client.close_code == 4001


def test_a_revoked_client_sees_close_code_4003_and_cannot_come_back(
    token_server, tokens, revoked_file
):
    alice = token_client(token_server, tokens.mint("alice"))
    bob = token_client(token_server, tokens.mint("bob"))
    revoked_file.write_text("alice\n")
    token_server.server.reload_revocations()
    token_server.flush()
    assert (alice.close_code, bob.close_code) == (4003, None)
    again = token_client(token_server, tokens.mint("alice"))
    assert (again.frames[-1]["code"], again.close_code) == (errors.AUTH_FAILED, 1008)


def test_a_refresh_with_a_new_display_name_shows_in_the_member_lists(
    make_chat, make_connection, tokens
):
    server = make_chat(auth=tokens.section)
    session, _ = welcome(server, make_connection(), tokens.identity("alice", name="Alice"))
    server.join(session, wire.Join("lobby", None, None))
    server.refresh(session, tokens.identity("alice", name="Alice Liddell"), None)
    members = json.loads(server.who(session, wire.Who("lobby", None)))
    assert members["names"] == {"alice": "Alice Liddell"}
