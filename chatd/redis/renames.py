"""Display names across nodes (Redis mode): a user renamed on one node (a token `refresh`
with a new name, the desk's `profile`) is renamed on every node.

The node that renamed the user writes the new name to Redis first, in the rooms' `names`
(what a node that takes a room on lists) and its own `held` (what its `leave` events would
carry), then publishes a `rename` notice. Every other node, hearing it, renames its sessions
of the user (what their next messages carry) and the user in its rooms, as a member or as one
present through other nodes (`Room.others`), and writes the same to Redis for the rooms it
holds the user in. `who` and `joined` then list the new name on every node.

A notice is at most once: a node that missed one (its subscription was being made again)
keeps the old name for that user's sessions and rooms until they next change.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd.redis.client import RedisLink, Script
from chatd.redis.keys import Keys
from chatd.redis.notices import Notices

RENAME = Script("rename")


class Renames:
    _log = Logger()

    def __init__(self, link: RedisLink, keys: Keys, notices: Notices, node: str):
        self._link = link
        self._keys = keys
        self._notices = notices
        self._node = node
        self._server = None

    def attach(self, server) -> None:
        self._server = server
        server.on_rename.append(self.renamed)
        self._notices.on("rename", self._heard)

    def renamed(self, user: str, name: str) -> None:
        """This node renamed the user (its sessions and members already): store the name in
        Redis, then tell the other nodes."""
        stored = self._store(user, name, self._apply_to_rooms(user, name))
        stored.addCallback(lambda _ignored: self._notices.publish("rename", user=user, name=name))
        stored.addErrback(self._not_stored, user)

    def _heard(self, node: str, notice: dict) -> None:
        if node == self._node:
            return  # done when it was renamed here
        user, name = notice.get("user"), notice.get("name")
        if not isinstance(user, str) or not isinstance(name, str):
            self._log.error("a rename notice from node {node} without a user and name", node=node)
            return
        for session in self._server.sessions.of_user(user):
            session.name = name
        self._store(user, name, self._apply_to_rooms(user, name)).addErrback(self._not_stored, user)

    def _apply_to_rooms(self, user: str, name: str) -> list[str]:
        """Rename the user in this node's rooms; the rooms it holds them in as a member."""
        held = []
        for room in self._server.directory.rooms.values():
            member = room.members.get(user)
            if member is not None:
                member.name = name
                held.append(room.name)
            elif user in room.others:
                room.others[user] = name
        return held

    def _store(self, user: str, name: str, rooms: list[str]) -> Deferred:
        if not rooms:
            return defer.succeed(None)
        keys = self._keys
        return self._link.run(
            RENAME,
            [keys.held(self._node), *(keys.names(room) for room in rooms)],
            [user, name, *rooms],
        )

    def _not_stored(self, failure, user: str) -> None:
        self._log.warn(
            "could not store {user}'s new display name in Redis ({error}): the other nodes"
            " keep listing the old one",
            user=user,
            error=str(failure.value),
        )
