"""Bans and mutes in Redis mode: one hash per room (`Keys.sanctions`), user key -> the user's
sanctions in force there (JSON `{"ban": until, "mute": until}`), so that a node taking the
room on knows them (sync.lua) before it lets anyone in (chatd/moderation.py).

A change is sent on the commands connection before the sanction's event is posted on it, so
Redis has stored it (and fsynced it) before the moderator's ack.
"""

from __future__ import annotations

import json

from twisted.logger import Logger

from chatd.redis.client import RedisLink
from chatd.redis.keys import Keys


class SharedSanctions:
    _log = Logger()

    def __init__(self, commands: RedisLink, keys: Keys):
        self._commands = commands
        self._keys = keys

    def carry_over(self, rooms: dict[str, dict[str, dict[str, float]]]) -> None:
        """Once Redis first answers: the sanctions `moderation.json` held (a single process's,
        before Redis mode), for the users Redis has none of."""
        if not rooms:
            return

        def carry(_protocol) -> None:
            self._commands.on_up.remove(carry)
            for room, users in rooms.items():
                for user_key, kinds in users.items():
                    self.store(room, user_key, kinds, only_new=True)
            self._log.info(
                "moderation.json: the sanctions of {count} room(s) carried over into Redis",
                count=len(rooms),
            )

        self._commands.on_up.append(carry)

    def store(
        self, room: str, user_key: str, kinds: dict[str, float] | None, only_new: bool = False
    ) -> None:
        """Store a user's sanctions in a room (none: lifted); `only_new`: unless Redis has
        some for them already."""
        key = self._keys.sanctions(room)
        if kinds:
            command = "HSETNX" if only_new else "HSET"
            stored = self._commands.execute(command, key, user_key, json.dumps(kinds))
        else:
            stored = self._commands.execute("HDEL", key, user_key)
        stored.addErrback(self._failed, room, user_key)

    def _failed(self, failure, room: str, user_key: str) -> None:
        self._log.error(
            "could not store {user}'s sanctions in room {room} in Redis: {error} (the"
            " moderator is told `unavailable` with the event's post)",
            user=user_key,
            room=room,
            error=failure.getErrorMessage(),
        )
