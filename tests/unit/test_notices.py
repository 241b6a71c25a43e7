"""chatd/redis/notices.py: node-wide notices are published as JSON on one channel and handed
to the handler of their kind, whichever node sent them."""

from __future__ import annotations

import json

from twisted.internet import defer

from chatd.redis.keys import Keys
from chatd.redis.notices import Notices


class Commands:
    """Stands in for the commands RedisLink: records what is published."""

    def __init__(self, fail: bool = False):
        self.published: list[tuple] = []
        self.fail = fail

    def execute(self, *args):
        self.published.append(args)
        return defer.fail(ConnectionError("gone")) if self.fail else defer.succeed(1)


def test_a_notice_is_published_with_its_kind_and_node_and_heard_by_its_handler():
    commands = Commands()
    notices = Notices(commands, Keys("p"), "node-a")
    notices.publish("rename", user="ann", name="Ann")
    [(command, channel, payload)] = commands.published
    assert (command, channel) == ("PUBLISH", b"p:notices")
    assert json.loads(payload) == {"kind": "rename", "node": "node-a", "user": "ann", "name": "Ann"}

    heard = []
    notices.on("rename", lambda node, notice: heard.append((node, notice["name"])))
    notices.hear(payload.encode())
    notices.hear(b'{"kind": "unknown", "node": "b"}')  # no handler: ignored
    assert heard == [("node-a", "Ann")]


def test_an_unreadable_notice_is_dropped():
    notices = Notices(Commands(), Keys("p"), "node-a")
    heard = []
    notices.on("rename", lambda node, notice: heard.append(notice))
    for payload in (b"not json", b"[1, 2]", b'{"kind": "rename"}'):
        notices.hear(payload)
    assert heard == []


def test_a_notice_redis_did_not_take_is_logged_not_raised():
    notices = Notices(Commands(fail=True), Keys("p"), "node-a")
    results = []
    notices.publish("rename", user="ann").addBoth(results.append)
    assert results == [None]
