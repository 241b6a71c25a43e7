"""Every room Redis has given an epoch, by name (Redis mode): the server API's room list
across nodes. post.lua and sync.lua add a room to the `rooms` sorted set (keys.py) when they
first give it an epoch; every score is 0, so that ZRANGEBYLEX pages through it by name."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from chatd.redis.client import RedisLink
from chatd.redis.keys import Keys


class RoomIndex:
    def __init__(self, link: RedisLink, keys: Keys):
        self._link = link
        self._keys = keys

    def names_after(self, after: str | None, count: int) -> Deferred:
        """Up to `count` room names after `after` (None: from the first), in order."""
        start = b"-" if after is None else b"(" + after.encode()
        read = self._link.execute("ZRANGEBYLEX", self._keys.rooms, start, b"+", "LIMIT", 0, count)
        return read.addCallback(lambda names: [name.decode() for name in names])
