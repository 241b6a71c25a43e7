"""Each user's sessions across the nodes, for `[auth] max_sessions_per_user` (Redis mode).

Every node keeps in its `sessions` hash (keys.py) how many sessions of each user it has, and
the limit applies to their sum over the live nodes. A new session claims its place before it
is opened: sessions.lua adds up the live nodes' counts and counts the session in one step, so
that two nodes cannot both let a user past the limit. The session gives its place back when
it ends. A session taken over with its resume secret claims nothing: it was counted when it
was opened.

The counts go with their node: a node whose lease has run out is not counted, and nodes.py
deletes its hash when it lets go of the node. A place that could not be given back while
Redis was away is made good when the node connects again: it writes its hash anew from the
sessions it has.

When Redis does not answer, a hello that needs a place is refused with `unavailable` (the
client retries): a node that cannot count a user's sessions does not let them past the limit.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd import errors
from chatd.errors import ChatError
from chatd.redis.client import RedisError, RedisLink, RedisUnavailable, Script, hash_of
from chatd.redis.keys import Keys

SESSIONS = Script("sessions")


class SessionCounts:
    _log = Logger()

    def __init__(self, link: RedisLink, keys: Keys, node: str):
        self._link = link
        self._keys = keys
        self._node = node
        self._server = None

    def attach(self, server) -> None:
        self._server = server
        server.session_counts = self
        server.on_session_end.append(lambda session: self.release(session.user))
        self._link.on_up.append(lambda _protocol: self._rewrite())

    def _call(self, what: str, user: str, limit: int = 0) -> Deferred:
        keys = self._keys
        return self._link.run(
            SESSIONS,
            [keys.nodes, keys.sessions(self._node)],
            [what, user, limit, self._node, keys.node_prefix],
        )

    def claim(self, user: str) -> Deferred:
        """A place for a new session of `user`; fails with a ChatError (`too_many_sessions`,
        or `unavailable` when Redis does not answer)."""
        limit = self._server.sessions.max_per_user
        # A node just started (or reconnecting) waits a moment for Redis rather than refuse.
        connected = self._link.connection()
        key = self._server.sessions.key_of(user)
        claimed = connected.addCallback(lambda _ignored: self._call("claim", key, limit))
        return claimed.addCallbacks(
            self._claimed, self._not_counted, callbackArgs=(user, limit), errbackArgs=(user,)
        )

    @staticmethod
    def _claimed(reply: list, user: str, limit: int) -> None:
        allowed, _total = reply
        if not allowed:
            raise ChatError(
                errors.TOO_MANY_SESSIONS,
                f"{user} already has {limit} sessions; close one, or resume it",
            )

    def _not_counted(self, failure, user: str):
        failure.trap(RedisUnavailable, RedisError)
        self._log.warn(
            "cannot count {user}'s sessions on the other nodes in Redis: {error}",
            user=user,
            error=str(failure.value),
        )
        raise ChatError(
            errors.UNAVAILABLE, f"the sessions of {user} cannot be counted across nodes now; retry"
        )

    def release(self, user: str) -> None:
        """A session of `user` on this node ended."""
        released = self._call("release", self._server.sessions.key_of(user))
        released.addErrback(self._not_released, user)

    def _not_released(self, failure, user: str) -> None:
        self._log.warn(
            "could not give back a session of {user} in Redis ({error}); this node counts its"
            " sessions again when it is connected to Redis again",
            user=user,
            error=str(failure.value),
        )

    def elsewhere(self, user: str) -> Deferred:
        """How many sessions `user` has on the other live nodes (a Deferred int; fails with
        `unavailable` when Redis does not answer)."""
        counted = self._call("elsewhere", self._server.sessions.key_of(user))
        return counted.addErrback(self._not_counted, user)

    def rooms_elsewhere(self, user: str) -> Deferred:
        """{room: display name} of the rooms the other live nodes hold `user` in (read from
        their `held` hashes; fails with `unavailable` when Redis does not answer)."""
        found = self._call("rooms", user).addCallback(hash_of)
        return found.addErrback(self._not_counted, user)

    def _rewrite(self) -> None:
        """Connected (again): this node's counts are its sessions, whatever Redis says."""
        key_of = self._server.sessions.key_of
        counts = Counter(key_of(session.user) for session in self._server.sessions)
        mine = self._keys.sessions(self._node)
        commands: list[tuple] = [("DEL", mine)]
        if counts:
            flat = [item for user, count in counts.items() for item in (user, count)]
            commands.append(("HSET", mine, *flat))
        for written in self._link.pipeline(commands):
            written.addErrback(self._not_rewritten)

    def _not_rewritten(self, failure) -> None:
        self._log.warn(
            "could not write this node's session counts to Redis: {error}",
            error=str(failure.value),
        )
