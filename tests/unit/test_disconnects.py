"""chatd/redis/disconnects.py: the server API's disconnect reaches the other nodes through a
notice, after the user's sessions there are counted; each node closes its own. The server and
its sessions are real; the Redis link is an in-memory stand-in whose replies the test gives."""

from __future__ import annotations

import json

import pytest
from redis_stand_in import Link
from twisted.internet.defer import Deferred

from chatd import errors
from chatd.errors import ChatError
from chatd.redis.client import RedisUnavailable
from chatd.redis.disconnects import Disconnects
from chatd.redis.keys import Keys
from chatd.redis.notices import Notices
from chatd.redis.session_counts import SessionCounts

KEYS = Keys("p")


@pytest.fixture
def make_node(make_chat):
    def make(counted: bool):
        """Node a; `counted`: its sessions counted in Redis (hellos then wait for Redis)."""
        server = make_chat()
        link = Link()
        notices = Notices(link, KEYS, "a")
        counts = SessionCounts(link, KEYS, "a")
        if counted:
            counts.attach(server)
        disconnects = Disconnects(notices, counts, "a")
        disconnects.attach(server)
        return server, link, notices, disconnects

    return make


def outcome(deferred: Deferred):
    results = []
    deferred.addBoth(results.append)
    [result] = results
    return result


def test_the_other_nodes_are_told_after_their_sessions_are_counted(make_node):
    _server, link, _notices, disconnects = make_node(counted=True)
    told = disconnects.elsewhere("ann", 4321, "asked by the shop", False)
    (call, counted) = link.calls.pop(0)
    assert call[3:5] == ("elsewhere", "ann")
    counted.callback(3)
    (command, channel, payload), published = link.calls.pop(0)
    assert (command, channel) == ("PUBLISH", b"p:notices")
    assert json.loads(payload) == {
        "kind": "disconnect",
        "node": "a",
        "user": "ann",
        "code": 4321,
        "reason": "asked by the shop",
        "revoke": False,
    }
    results = []
    told.addBoth(results.append)
    assert results == []  # not before the notice is out
    published.callback(1)
    assert results == [3]


@pytest.mark.parametrize("failing", ["count", "publish"])
def test_other_nodes_that_cannot_be_told_make_it_unavailable(make_node, failing):
    _server, link, _notices, disconnects = make_node(counted=True)
    told = disconnects.elsewhere("ann", 4004, "bye", False)
    if failing == "count":
        link.calls.pop(0)[1].errback(RedisUnavailable("not connected to Redis"))
    else:
        link.calls.pop(0)[1].callback(0)
        link.calls.pop(0)[1].errback(RedisUnavailable("not connected to Redis"))
    error = outcome(told).value
    assert isinstance(error, ChatError) and error.code == errors.UNAVAILABLE


def test_a_notice_from_another_node_closes_the_user_s_sessions_here(make_node, enter, monkeypatch):
    server, _link, notices, _disconnects = make_node(counted=False)
    _ann, ann_connection, _joined = enter(server, "ann", "lobby")
    _bob, bob_connection, _joined = enter(server, "bob", "lobby")
    reloaded = []
    monkeypatch.setattr(server, "reload_revocations", lambda: reloaded.append(True))
    notice = {"kind": "disconnect", "node": "b", "user": "ann", "code": 4321, "reason": "shop"}
    notices.hear(json.dumps({**notice, "node": "a"}).encode())  # its own: closed already
    assert ann_connection.closed is None
    notices.hear(json.dumps(notice).encode())
    assert (ann_connection.closed, bob_connection.closed) == ((4321, "shop"), None)
    assert reloaded == []
    notices.hear(json.dumps({**notice, "revoke": True}).encode())
    assert reloaded == [True]
