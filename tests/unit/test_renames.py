"""chatd/redis/renames.py: a display name changed on one node is stored in Redis, then told to
the other nodes, which rename the user's sessions and rooms there. The server and its rooms are
real; the Redis link is an in-memory stand-in whose replies the test gives."""

from __future__ import annotations

import json

import pytest
from redis_stand_in import Link
from twisted.logger import formatEvent

from chatd import wire
from chatd.redis.client import RedisUnavailable
from chatd.redis.keys import Keys
from chatd.redis.notices import Notices
from chatd.redis.renames import Renames

KEYS = Keys("p")


def logged(events: list[dict]) -> list[str]:
    return [formatEvent(event) for event in events]


@pytest.fixture
def node_a(make_chat):
    server = make_chat()
    link = Link()
    notices = Notices(link, KEYS, "a")
    Renames(link, KEYS, notices, "a").attach(server)
    return server, link, notices


def test_a_rename_here_is_stored_for_the_rooms_held_then_told_to_the_other_nodes(node_a, enter):
    server, link, _notices = node_a
    enter(server, "ann", "lobby")
    server.rooms["lobby"].others["cat"] = "Cat"  # cat is in the lobby through another node
    server.rename("ann", "Annie")

    [(call, stored)] = link.calls
    assert call == ("rename", "p:node:a:held", "p:{lobby}:names", "ann", "Annie", "lobby")
    stored.callback(1)
    (command, channel, payload), _published = link.calls[1]
    assert (command, channel) == ("PUBLISH", b"p:notices")
    assert json.loads(payload) == {"kind": "rename", "node": "a", "user": "ann", "name": "Annie"}
    assert server.rooms["lobby"].names() == {"cat": "Cat", "ann": "Annie"}


def test_a_rename_redis_did_not_store_is_not_told(node_a, enter, log_events):
    server, link, _notices = node_a
    enter(server, "ann", "lobby")
    server.rename("ann", "Annie")
    link.calls[0][1].errback(RedisUnavailable("the connection to Redis was lost"))
    assert len(link.calls) == 1
    assert any("could not store ann's new display name" in line for line in logged(log_events))


def test_a_rename_told_by_another_node_renames_sessions_members_and_others(node_a, enter):
    server, link, notices = node_a
    ann, _connection, _joined = enter(server, "ann", "lobby")
    enter(server, "bob", "help")
    server.rooms["help"].others["ann"] = "Ann"  # ann is in help through another node
    heard = {"kind": "rename", "node": "b", "user": "ann", "name": "Annie"}
    notices.hear(json.dumps(heard).encode())

    assert ann.name == "Annie"
    assert server.rooms["lobby"].names() == {"ann": "Annie"}
    assert server.rooms["help"].names() == {"ann": "Annie", "bob": "bob"}
    [(call, _stored)] = link.calls  # only where this node holds ann as a member
    assert call == ("rename", "p:node:a:held", "p:{lobby}:names", "ann", "Annie", "lobby")


def test_a_node_ignores_its_own_rename_notice_and_unreadable_ones(node_a, enter, log_events):
    server, link, notices = node_a
    ann, _connection, _joined = enter(server, "ann", "lobby")
    notices.hear(b'{"kind": "rename", "node": "a", "user": "ann", "name": "Annie"}')
    notices.hear(b'{"kind": "rename", "node": "b", "user": "ann"}')
    assert ann.name == "ann" and link.calls == []
    assert any("a rename notice from node b without" in line for line in logged(log_events))


def test_a_refresh_with_a_new_name_renames_across_nodes_and_one_without_does_not(
    make_chat, tokens, make_connection
):
    server = make_chat(auth=tokens.section)
    renamed = []
    server.on_rename.append(lambda user, name: renamed.append((user, name)))
    identity = tokens.identity("ann", name="Ann")
    session, _welcome = server.hello(make_connection(), identity, wire.Hello(name=None, ref=None))
    server.refresh(session, tokens.identity("ann", name="Ann"), None)
    server.refresh(session, tokens.identity("ann", name="Annie"), None)
    assert renamed == [("ann", "Annie")]
