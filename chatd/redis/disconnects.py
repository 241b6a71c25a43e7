"""The server API's disconnect and room close across nodes (Redis mode): every node closes the
user's sessions, or lets every session in the room go.

The node that serves the API call closes its own sessions of the user at once (backend.py),
counts the user's sessions on the other live nodes (session_counts.py), and publishes a
`disconnect` notice; every other node, hearing it, closes its sessions of the user with the
code and reason asked for (with `revoke`, after reading its `[auth] revoked_file` again).

A room close is told the same way (`close_room`): every node holding the room lets its
sessions in it go, as the node serving the call did with its own.

A notice is at most once: a node that missed one (its subscription was being made again)
keeps the user's sessions there; `GET /api/users/{user}` shows them and the call can be made
again.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd import errors
from chatd.errors import ChatError
from chatd.redis.notices import Notices
from chatd.redis.session_counts import SessionCounts


class Disconnects:
    _log = Logger()

    def __init__(self, notices: Notices, counts: SessionCounts, node: str):
        self._notices = notices
        self._counts = counts
        self._node = node
        self._server = None

    def attach(self, server) -> None:
        self._server = server
        self._notices.on("disconnect", self._heard)
        self._notices.on("close_room", self._heard_close)

    def close_room_elsewhere(self, room: str) -> Deferred:
        """Have the other nodes let the room's sessions go; fails with `unavailable` if they
        could not be told."""

        def heard(receivers):
            if receivers is None:  # not published (logged by Notices)
                raise ChatError(errors.UNAVAILABLE, "the other nodes could not be told; retry")

        return self._notices.publish("close_room", room=room).addCallback(heard)

    def _heard_close(self, node: str, notice: dict) -> None:
        if node == self._node:
            return  # closed here by the API call itself
        room = self._server.directory.rooms.get(notice.get("room"))
        if room is None:
            return  # no session of this node is in it
        sessions = self._server.close_room(room)
        if sessions:
            self._log.info(
                "closed room {room} for {count} session(s), as the server API asked on node {node}",
                room=room.name,
                count=len(sessions),
                node=node,
            )

    def elsewhere(self, user: str, code: int, reason: str, revoke: bool) -> Deferred:
        """Have the other nodes close `user`'s sessions. Fires with how many sessions they had
        by Redis's counts; fails with `unavailable` if they could not be told."""
        counted = self._counts.elsewhere(user)
        return counted.addCallback(self._tell, user, code, reason, revoke)

    def _tell(self, count: int, user: str, code: int, reason: str, revoke: bool) -> Deferred:
        told = self._notices.publish(
            "disconnect", user=user, code=code, reason=reason, revoke=revoke
        )

        def heard(receivers):
            if receivers is None:  # not published (logged by Notices)
                raise ChatError(errors.UNAVAILABLE, "the other nodes could not be told; retry")
            return count

        return told.addCallback(heard)

    def _heard(self, node: str, notice: dict) -> None:
        if node == self._node:
            return  # closed here by the API call itself
        user, code, reason = notice.get("user"), notice.get("code"), notice.get("reason")
        if not (isinstance(user, str) and isinstance(code, int) and isinstance(reason, str)):
            self._log.error("an unreadable disconnect notice from node {node}", node=node)
            return
        server = self._server
        if notice.get("revoke") is True:
            server.reload_revocations()
        sessions = [s for s in server.sessions.of_user(user) if s.connection is not None]
        for session in sessions:
            session.connection.close_with(code, reason)
        if sessions:
            self._log.info(
                "closed {count} connection(s) of {user} with {code}, as the server API asked"
                " on node {node}",
                count=len(sessions),
                user=user,
                code=code,
                node=node,
            )
