"""Anonymous visitors: ids chatd issues itself, secrets it can check after any restart, and
nothing a visitor can use to become an agent or another user."""

import os
import stat
from pathlib import Path

import pytest

from chatd import errors, wire
from chatd.auth import Identity, OpenAuthenticator
from chatd.errors import ChatError
from chatd.names import USER_ID
from chatd.support import support_room_of
from chatd.visitors import (
    KEY_FILE,
    VISITOR_ID,
    VisitorGate,
    Visitors,
    load_or_create_key,
)

AGENT = frozenset({"agent"})


@pytest.fixture
def key_dir(tmp_path):
    directory = tmp_path / "keys"
    directory.mkdir()
    return directory


@pytest.fixture
def gate(key_dir):
    """Open mode with `agent1` a trial agent, and anonymous visitors."""
    visitors = Visitors(load_or_create_key(key_dir))
    return VisitorGate(OpenAuthenticator({"agent1": AGENT}), visitors)


def visitor_hello(name=None, secret=None, **more) -> wire.Hello:
    return wire.Hello(name=name, ref=None, secret=secret, visitor=True, **more)


def refusal(call, *args) -> ChatError:
    with pytest.raises(ChatError) as caught:
        call(*args)
    return caught.value


def test_a_new_visitor_gets_a_fresh_id_without_roles_and_its_secret(gate):
    first = gate.identify(visitor_hello())
    second = gate.identify(visitor_hello())
    assert VISITOR_ID.fullmatch(first.user) and USER_ID.fullmatch(first.user)
    assert first.user != second.user and first.secret != second.secret
    assert first.roles == frozenset() and first.display_name == first.user
    # The id is a plain room name: the conversation is support-v-….
    assert support_room_of(first.user) == "support-" + first.user


def test_a_returning_visitor_is_the_same_user_with_a_new_key_object(gate, key_dir):
    first = gate.identify(visitor_hello())
    # As after a restart: the key is read back from its file, nothing else is remembered.
    again = Visitors(load_or_create_key(key_dir)).identify(visitor_hello(first.user, first.secret))
    assert (again.user, again.secret, again.roles) == (first.user, first.secret, frozenset())


def test_a_forged_or_another_visitors_secret_is_refused(gate):
    alice = gate.identify(visitor_hello())
    bob = gate.identify(visitor_hello())
    for secret in ("forged", bob.secret, None, alice.secret[:-1]):
        error = refusal(gate.identify, visitor_hello(alice.user, secret))
        assert error.code == errors.AUTH_FAILED


def test_a_visitor_cannot_take_an_agents_or_any_other_users_id(gate, key_dir):
    visitors = Visitors(load_or_create_key(key_dir))
    for user in ("agent1", "alice", "V-AAAAAAAAAAAAAAAA", "v-short"):
        # Even with what the secret of that id would be, it is no visitor id: refused.
        error = refusal(gate.identify, visitor_hello(user, visitors.secret_of(user)))
        assert error.code == errors.AUTH_FAILED


def test_open_names_like_visitor_ids_are_kept_for_visitors(gate):
    visitor = gate.identify(visitor_hello())
    for name in (visitor.user, visitor.user.upper()):
        error = refusal(gate.identify, wire.Hello(name=name, ref=None, secret=visitor.secret))
        assert error.code == errors.BAD_NAME
    assert gate.identify(wire.Hello(name="agent1", ref=None)).roles == AGENT


def test_with_visitors_token_an_anonymous_hello_is_refused_clearly():
    gate = VisitorGate(OpenAuthenticator(), None)
    error = refusal(gate.identify, visitor_hello())
    assert error.code == errors.AUTH_FAILED
    assert "visitors = token" in error.message


def test_a_token_hello_is_a_token_identity_and_a_visitor_hello_a_visitor(tokens, key_dir):
    gate = VisitorGate(tokens.authenticator, Visitors(load_or_create_key(key_dir)))
    token = tokens.mint("bob", roles=["agent"], name="Bob")
    agent = gate.identify(wire.Hello(name=None, ref=None, token=token, visitor=True))
    assert (agent.user, agent.roles) == ("bob", AGENT)
    assert VISITOR_ID.fullmatch(gate.identify(visitor_hello()).user)
    assert gate.verify == tokens.authenticator.verify  # refresh still works for tokens


def test_the_key_is_made_once_private_and_deleting_it_forgets_every_visitor(key_dir, umask_022):
    key = load_or_create_key(key_dir)
    path = key_dir / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(key_dir) == key
    visitor = Visitors(key).identify(visitor_hello())
    path.unlink()
    forgetful = Visitors(load_or_create_key(key_dir))
    error = refusal(forgetful.identify, visitor_hello(visitor.user, visitor.secret))
    assert error.code == errors.AUTH_FAILED


# -- sessions: welcome carries the secret, in open and in token mode ---------------------------


@pytest.mark.parametrize("auth", [{}, {"mode": "token"}])
def test_welcome_carries_the_visitors_secret_and_it_joins_the_same_user(
    make_chat, make_connection, gate, tokens, auth
):
    sections = {"auth": tokens.section} if auth else {}
    server = make_chat(support={"enabled": True, "visitors": "anonymous"}, **sections)
    identity = gate.identify(visitor_hello())
    _session, welcome = server.hello(make_connection(), identity, visitor_hello())
    assert welcome["secret"] == identity.secret
    assert welcome["support_room"] == support_room_of(identity.user)
    hello = visitor_hello(identity.user, identity.secret)
    again, welcome = server.hello(make_connection(), gate.identify(hello), hello)
    assert (again.user, welcome["secret"]) == (identity.user, identity.secret)
    assert len(server.sessions.of_user(identity.user)) == 2


def test_an_ordinary_open_user_still_needs_the_users_own_secret(make_chat, make_connection):
    server = make_chat()
    alice = Identity("alice", "alice", frozenset())
    _s, welcome = server.hello(make_connection(), alice, wire.Hello(name="alice", ref=None))
    with pytest.raises(ChatError) as caught:
        server.hello(make_connection(), alice, wire.Hello(name="alice", ref=None, secret="x"))
    assert caught.value.code == errors.NAME_TAKEN
    assert welcome["secret"]


# -- through a listener ------------------------------------------------------------------------


def test_through_a_listener_a_visitor_comes_back_and_a_forger_is_closed(make_server, gate):
    listener = make_server(authenticator=gate, support={"enabled": True, "visitors": "anonymous"})
    first = listener.connect()
    first.send_json({"type": "hello", "visitor": True})
    listener.flush()
    welcome = first.of_type("welcome")[-1]
    assert VISITOR_ID.fullmatch(welcome["user"]) and welcome["roles"] == []
    back = listener.connect()
    back.send_json(
        {"type": "hello", "visitor": True, "name": welcome["user"], "secret": welcome["secret"]}
    )
    forger = listener.connect()
    forger.send_json({"type": "hello", "visitor": True, "name": welcome["user"], "secret": "x"})
    listener.flush()
    assert back.of_type("welcome")[-1]["user"] == welcome["user"]
    assert forger.of_type("error")[-1]["code"] == errors.AUTH_FAILED
    assert forger.of_type("welcome") == []


def test_nodes_making_the_key_at_once_all_read_the_first_one_linked(tmp_path, monkeypatch):
    # Another node links its key in while this one is writing its own aside.
    real_link = os.link

    def link_after_another(source, target):
        if not Path(target).exists():
            Path(target).write_bytes(b"k" * 32)
        return real_link(source, target)

    monkeypatch.setattr(os, "link", link_after_another)
    assert load_or_create_key(tmp_path) == b"k" * 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visitor.key"]  # nothing left aside
