"""chatd/redis/session_counts.py and the hello that waits for it: in Redis mode a new session
claims its place among its user's sessions on every node before it is opened, and gives it
back when it ends. The Redis link is an in-memory stand-in whose replies the test gives; the
server, its sessions and the protocol are the real ones."""

from __future__ import annotations

import pytest
from redis_stand_in import Link
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from chatd import errors, wire
from chatd.auth import OpenAuthenticator
from chatd.config import RedisConfig
from chatd.errors import ChatError
from chatd.redis.client import RedisLink, RedisUnavailable
from chatd.redis.keys import Keys
from chatd.redis.session_counts import SessionCounts

KEYS = Keys("p")


@pytest.fixture
def counted(make_chat):
    """A server whose sessions are counted through a stand-in link, as node `a`'s."""
    server = make_chat(auth={"max_sessions_per_user": 2})
    link = Link()
    SessionCounts(link, KEYS, "a").attach(server)
    return server, link


def hello(server, connection, name: str, **frame):
    """The server's answer to an open-mode hello as `name` (a Deferred, in Redis mode)."""
    request = wire.Hello(name=name, ref=None, **frame)
    return server.hello(connection, OpenAuthenticator().identify(request), request)


def outcome(deferred: Deferred):
    results = []
    deferred.addBoth(results.append)
    [result] = results
    return result


def test_a_new_session_is_opened_once_redis_has_counted_it(counted, make_connection):
    server, link = counted
    welcome = hello(server, make_connection(), "ann")
    call, reply = link.take()
    assert call == ("sessions", "p:nodes", "p:node:a:sessions", "claim", "ann", 2, "a", "p:node:")
    assert server.sessions.of_user("ann") == []  # not before Redis says so
    reply.callback([1, 2])
    session, fields = outcome(welcome)
    assert server.sessions.of_user("ann") == [session] and fields["user"] == "ann"


def test_a_user_at_the_limit_on_all_nodes_is_refused_and_nothing_is_opened(
    counted, make_connection
):
    server, link = counted
    welcome = hello(server, make_connection(), "ann")
    link.take()[1].callback([0, 2])
    refusal = outcome(welcome).value
    assert isinstance(refusal, ChatError) and refusal.code == errors.TOO_MANY_SESSIONS
    assert server.sessions.of_user("ann") == [] and link.calls == []


def test_redis_not_answering_is_unavailable(counted, make_connection):
    server, link = counted
    welcome = hello(server, make_connection(), "ann")
    link.take()[1].errback(RedisUnavailable("the connection to Redis was lost"))
    refusal = outcome(welcome).value
    assert isinstance(refusal, ChatError) and refusal.code == errors.UNAVAILABLE


def test_a_hello_refused_here_after_its_claim_gives_the_place_back(counted, make_connection):
    server, link = counted
    first = hello(server, make_connection(), "ann")
    link.take()[1].callback([1, 1])
    outcome(first)
    taken = hello(server, make_connection(), "ANN")  # open mode: the name is in use
    link.take()[1].callback([1, 2])
    assert outcome(taken).value.code == errors.NAME_TAKEN
    call, _reply = link.take()
    assert call[3:5] == ("release", "ann")


def test_a_session_resumed_claims_nothing_and_an_ended_one_gives_its_place_back(
    counted, make_connection
):
    server, link = counted
    welcome = hello(server, make_connection(), "ann")
    link.take()[1].callback([1, 1])
    session, fields = outcome(welcome)
    again, _fields = hello(
        server, make_connection(), "ann", resume=fields["resume"], secret=fields["secret"]
    )
    assert again is session and link.calls == []
    server.disconnect(session)
    call, _reply = link.take()
    assert call[3:5] == ("release", "ann")


def test_when_redis_is_back_the_node_writes_its_counts_anew(counted, make_connection):
    server, link = counted
    secret = None
    for name in ("ann", "Ann", "bob"):  # open mode: Ann is ann's second session
        welcome = hello(server, make_connection(), name, secret=secret)
        link.take()[1].callback([1, 1])
        secret = secret or outcome(welcome)[1]["secret"]
    for hook in link.on_up:
        hook(None)
    calls = [call for call, _reply in link.calls]
    assert calls[0] == ("DEL", "p:node:a:sessions")
    assert calls[1][:2] == ("HSET", "p:node:a:sessions")
    assert dict(zip(calls[1][2::2], calls[1][3::2], strict=True)) == {"ann": 2, "bob": 1}


def test_a_link_not_yet_connected_is_waited_for_up_to_connect_timeout():
    clock = Clock()
    config = RedisConfig(url="redis://127.0.0.1:1/0", connect_timeout=2.0)
    link = RedisLink(clock, config)
    waited = link.connection()
    clock.advance(1.9)
    assert not waited.called
    clock.advance(0.2)
    assert isinstance(outcome(waited).value, RedisUnavailable)
    assert link._waiting == []


# -- the protocol: a hello answered later ---------------------------------------------------


class Gate:
    """Stands in for SessionCounts: each claim waits for the test."""

    def __init__(self):
        self.claims: list[Deferred] = []
        self.released: list[str] = []

    def claim(self, user: str) -> Deferred:
        self.claims.append(Deferred())
        return self.claims[-1]

    def release(self, user: str) -> None:
        self.released.append(user)


@pytest.fixture
def gated(server):
    gate = Gate()
    server.server.session_counts = gate
    server.server.on_session_end.append(lambda session: gate.release(session.user))
    return server, gate


def test_frames_after_a_hello_wait_for_its_welcome_and_are_served_in_order(gated):
    server, gate = gated
    client = server.connect()
    client.send_json({"type": "hello", "name": "ann"})
    client.send_json({"type": "join", "room": "lobby", "id": "j"})
    server.flush()
    assert client.frames == []
    gate.claims[0].callback(None)
    server.flush()
    assert [frame["type"] for frame in client.frames] == ["welcome", "joined", "presence"]


def test_a_refused_claim_is_an_error_frame_and_hello_may_be_tried_again(gated):
    server, gate = gated
    client = server.connect()
    client.send_json({"type": "hello", "name": "ann", "id": "h"})
    server.flush()
    gate.claims[0].errback(ChatError(errors.TOO_MANY_SESSIONS, "ann already has 2 sessions"))
    server.flush()
    assert client.frames[-1]["code"] == errors.TOO_MANY_SESSIONS
    assert client.frames[-1]["ref"] == "h" and client.close_code is None
    client.send_json({"type": "hello", "name": "ann"})
    server.flush()
    gate.claims[1].callback(None)
    server.flush()
    assert client.frames[-1]["type"] == "welcome"


def test_a_connection_closed_while_its_hello_waits_ends_the_session_it_gets(gated):
    server, gate = gated
    client = server.connect()
    client.send_json({"type": "hello", "name": "ann"})
    server.flush()
    client.sendClose(1000)
    server.flush()
    gate.claims[0].callback(None)
    server.flush()
    assert server.server.sessions.of_user("ann") == []
    assert gate.released == ["ann"]


def test_the_keys_sessions_lua_builds_for_other_nodes_are_those_of_keys_py():
    # sessions.lua reads `PREFIX .. node .. ':alive'` and `... ':sessions'` itself.
    assert KEYS.alive("b") == KEYS.node_prefix + "b" + ":alive"
    assert KEYS.sessions("b") == KEYS.node_prefix + "b" + ":sessions"
