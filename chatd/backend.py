"""What the website's backend may do to the chat, with no HTTP in it: the server API's calls.

api.py turns HTTP requests into these calls and their results (or `ChatError`s) into JSON.
Everything here goes through the same paths as the clients' requests: a publish is posted by
`Server.post` like a client's `say` (same seq, durability, ordering and retry de-duplication by
(sender, id)); only its sender is one of `[api] bots`, and its event carries `"bot": true`.

In Redis mode (`server.cluster` set) the lookups and the disconnect reach past this node: the
room list adds every room Redis knows, a room's details are read from its replica (taken on
for the call if this node does not hold it) with the members present through other nodes, a
user's sessions are counted on every live node, and a disconnect is told to every node.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

from twisted.internet.defer import Deferred, TimeoutError, gatherResults
from twisted.logger import Logger

from chatd import errors, wire
from chatd.config import HistoryConfig
from chatd.errors import ChatError
from chatd.events import Event
from chatd.names import CLIENT_ID, ROOM_NAME, ROOM_RULE, USER_ID, USER_RULE
from chatd.redis.client import RedisError, RedisUnavailable
from chatd.rooms import Draft, Room, message_draft
from chatd.support import customer_of

# API-only error codes (the chat protocol's are in errors.py).
UNKNOWN_USER = "unknown_user"
NOT_SUPPORT_ROOM = "not_support_room"
NO_REVOCATION_LIST = "no_revocation_list"

CLOSE_CODES = (1000, 1001, 1008, *range(4000, 5000))


class AckBridge:
    """Stands in for a session as the pipeline's `ack_to`: its ack (or error) resolves
    `deferred` with the event's seq (or fails it with the ChatError), once it is durable."""

    def __init__(self):
        self.connection = self
        self.deferred: Deferred = Deferred()

    def send(self, payload: bytes) -> None:
        if self.deferred.called:
            return
        frame = json.loads(payload)
        if frame.get("type") == "ack":
            self.deferred.callback(frame["seq"])
        else:
            self.deferred.errback(
                ChatError(frame.get("code", errors.UNAVAILABLE), frame.get("message", ""))
            )


class Backend:
    _log = Logger()

    def __init__(
        self,
        server,
        bots: tuple[str, ...],
        parser: wire.FrameParser,
        history: HistoryConfig,
        timeout: float,
        support: bool,
    ):
        self.server = server
        self.bots = frozenset(bots)
        self._parser = parser
        self._history = history
        self._timeout = timeout
        self._support = support
        self._unnamed = itertools.count(1)

    # -- posting ------------------------------------------------------------------------------

    def publish(self, room: str, text: str, sender: str, client_id: str) -> Deferred:
        """Post a bot's message; fires with its seq once it is durable (a retry with the same
        id: the original seq, nothing posted again)."""
        say = self._parser.parse(
            wire.encode({"type": "say", "room": room, "text": text, "id": client_id})
        )
        self._check_bot(sender)
        draft = message_draft(sender, sender, say.id, say.text, self.server.now())
        draft.fields["bot"] = True
        self.server.metrics.messages_in.inc()
        target = self.server.directory.open_for_server_later(say.room)
        return target.addCallback(self._post, draft)

    def resolve(self, room: str, sender: str, client_id: str | None) -> Deferred:
        """The desk's `resolve`, by a bot: a `status` event in a support conversation."""
        if not self._support:
            raise ChatError(errors.FORBIDDEN, "the support desk is not enabled ([support])")
        self._check_room_name(room)
        self._check_bot(sender)
        self._check_client_id(client_id)
        if customer_of(room) is None:
            raise ChatError(NOT_SUPPORT_ROOM, f"{room!r} is not a support conversation")
        target = self._find(room)
        fields = {"from": sender, "name": sender, "status": "resolved", "bot": True}
        return self._post(target, Draft("status", fields, sender, self.server.now(), client_id))

    def assign(self, room: str, agent, sender: str, client_id: str | None) -> Deferred:
        """The desk's `transfer`, by a bot: the conversation goes to `agent` (a connected
        agent, or None: nobody), whoever held it."""
        if self.server.desk is None:
            raise ChatError(errors.FORBIDDEN, "the support desk is not enabled ([support])")
        self._check_room_name(room)
        self._check_bot(sender)
        self._check_client_id(client_id)
        if agent is not None and not (isinstance(agent, str) and USER_ID.fullmatch(agent)):
            raise ChatError(errors.BAD_NAME, f"'agent' must be a user id or null: {USER_RULE}")
        if customer_of(room) is None:
            raise ChatError(NOT_SUPPORT_ROOM, f"{room!r} is not a support conversation")
        target = self._find(room)
        return self._acknowledged(
            target,
            client_id,
            lambda ref, bridge: self.server.desk.transfer_by_bot(room, agent, sender, ref, bridge),
        )

    def _post(self, room: Room, draft: Draft) -> Deferred:
        """Post through the pipeline; fires with {room, epoch, seq[, id]} once durable."""

        def post(ref, bridge):
            draft.client_id = ref
            self.server.post(room, draft, ack_to=bridge)

        return self._acknowledged(room, draft.client_id, post)

    def _acknowledged(self, room: Room, client_id: str | None, post) -> Deferred:
        """`post(ref, bridge)` something whose ack comes to the bridge; fires with {room,
        epoch, seq[, id]} once it is durable."""
        answer = {"room": room.name, "epoch": room.epoch}
        if client_id is not None:
            answer["id"] = client_id
        else:
            # Only posts with an id are acknowledged: one that is never repeated stands in.
            client_id = f"api-{next(self._unnamed)}-{self.server.now()!r}"
        bridge = AckBridge()
        post(client_id, bridge)
        result = bridge.deferred
        result.addTimeout(self._timeout, self.server.clock)

        def timed_out(failure):
            failure.trap(TimeoutError)
            raise ChatError(errors.UNAVAILABLE, "the event was not stored in time; retry")

        return result.addCallbacks(lambda seq: {**answer, "seq": seq}, timed_out)

    def _check_bot(self, sender) -> None:
        if not isinstance(sender, str):
            raise ChatError(errors.BAD_FRAME, "'from' must be a string")
        if sender not in self.bots:
            raise ChatError(errors.FORBIDDEN, f"{sender[:40]!r} is not one of [api] bots")

    @staticmethod
    def _check_client_id(client_id) -> None:
        if client_id is not None and not (
            isinstance(client_id, str) and CLIENT_ID.fullmatch(client_id)
        ):
            raise ChatError(errors.BAD_ID, "'id' must be 1-64 of A-Z a-z 0-9 _ . : -")

    @staticmethod
    def _check_room_name(room) -> None:
        if not isinstance(room, str) or not ROOM_NAME.fullmatch(room):
            raise ChatError(errors.BAD_ROOM, ROOM_RULE)

    # -- reading ------------------------------------------------------------------------------

    def rooms(self, after: str | None, limit: int) -> dict | Deferred:
        """Rooms in memory or with a transcript (Redis mode: or known to Redis), by name, a
        page at a time."""
        cluster = self.server.cluster
        if cluster is None:
            return self._rooms_page(after, limit, [])
        # One more than a page: with the names known here, enough to fill it and say `next`
        # (a room Redis knows past these sorts after all of them).
        known = cluster.room_index.names_after(after, limit + 1)
        return known.addCallbacks(
            lambda names: self._rooms_page(after, limit, names), _redis_unavailable
        )

    def _rooms_page(self, after: str | None, limit: int, known: list[str]) -> dict:
        loaded = self.server.directory.rooms
        names = sorted(set(loaded) | set(self.server.store.rooms()) | set(known))
        if after is not None:
            names = [name for name in names if name > after]
        page = names[:limit]
        listed = []
        for name in page:
            room = loaded.get(name)
            entry = {"room": name, "loaded": room is not None}
            if room is not None:
                entry.update(epoch=room.epoch, seq=room.committed_seq, members=len(room.members))
            listed.append(entry)
        more = len(names) > limit
        return {"rooms": listed, "next": page[-1] if more else None}

    def room(self, name: str) -> dict | Deferred:
        found = self._find_later(name)
        if isinstance(found, Deferred):
            return found.addCallback(self._room_details)
        return self._room_details(found)

    @staticmethod
    def _room_details(room: Room) -> dict:
        members = [
            {"user": user, "name": member.name, "sessions": len(member.sessions)}
            for user, member in room.members.items()
        ]
        # Redis mode: members connected through other nodes only (their sessions are there).
        members += [
            {"user": user, "name": name, "sessions": 0}
            for user, name in room.others.items()
            if user not in room.members
        ]
        return {
            "room": room.name,
            "epoch": room.epoch,
            "seq": room.committed_seq,
            "members": members,
        }

    def history(self, name: str, before: int | None, limit: int | None) -> dict | Deferred:
        found = self._find_later(name)
        if isinstance(found, Deferred):
            return found.addCallback(self._history_of, before, limit)
        return self._history_of(found, before, limit)

    def _history_of(self, room: Room, before: int | None, limit: int | None) -> dict:
        config = self._history
        limit = min(limit or config.replay_events or config.page_limit, config.page_limit)
        before = before if before is not None else room.committed_seq + 1
        lines = self.server.events_before(room, before, limit)
        if isinstance(lines, Deferred):
            return lines.addCallback(self._history_page, room)
        return self._history_page(lines, room)

    @staticmethod
    def _history_page(lines: list[bytes], room: Room) -> dict:
        events = [Event.from_line(line).record for line in lines]
        more = bool(events) and events[0]["seq"] > 1
        return {"room": room.name, "epoch": room.epoch, "events": events, "more": more}

    def _find(self, name: str) -> Room:
        self._check_room_name(name)
        room = self.server.directory.find(name)
        if room is None:
            raise ChatError(errors.UNKNOWN_ROOM, f"there is no room {name!r}")
        self.server.directory.touch(room)
        return room

    def _find_later(self, name: str) -> Room | Deferred:
        """`_find`; in Redis mode, for a room this node does not hold, a Deferred: the room
        taken on from Redis."""
        directory = self.server.directory
        if directory.replicas is None or name in directory.rooms:
            return self._find(name)
        self._check_room_name(name)

        def found(room: Room | None) -> Room:
            if room is None:
                raise ChatError(errors.UNKNOWN_ROOM, f"there is no room {name!r}")
            directory.touch(room)
            return room

        return directory.find_later(name).addCallbacks(found, _redis_unavailable)

    def user(self, user: str) -> dict | Deferred:
        """Whether `user` is online, with how many sessions, by which names, in which rooms
        (Redis mode: on every live node; the rooms and names the other nodes hold the user in
        come from their presence in Redis)."""
        if not USER_ID.fullmatch(user):
            raise ChatError(errors.BAD_NAME, USER_RULE)
        sessions = self.server.sessions.of_user(user)
        cluster = self.server.cluster
        if cluster is None:
            return self._user_details(user, sessions, 0, {})
        counts = cluster.session_counts
        found = gatherResults(
            [counts.elsewhere(user), counts.rooms_elsewhere(user)], consumeErrors=True
        ).addErrback(lambda failure: failure.value.subFailure)
        return found.addCallback(lambda got: self._user_details(user, sessions, *got))

    @staticmethod
    def _user_details(user: str, sessions: list, elsewhere: int, held: dict[str, str]) -> dict:
        """`held`: the rooms other nodes hold the user in, with the name they hold them by."""
        rooms = sorted({room for session in sessions for room in session.rooms} | set(held))
        names = sorted({session.name for session in sessions} | set(held.values()))
        return {
            "user": sessions[0].user if sessions else user,
            "online": bool(sessions) or elsewhere > 0,
            "sessions": len(sessions) + elsewhere,
            "names": names,
            "rooms": rooms,
        }

    # -- ending -------------------------------------------------------------------------------

    def disconnect(self, user: str, code: int, reason: str, revoke: bool) -> dict | Deferred:
        """Close every connection of `user` (and, with `revoke`, add the user to
        `[auth] revoked_file` so that it cannot say hello again until removed).

        Redis mode: this node's at once, then the other nodes are told (disconnects.py); the
        answer, once they have been, counts this node's sessions closed and the sessions
        the other live nodes had by Redis's counts."""
        if not isinstance(user, str) or not USER_ID.fullmatch(user):
            raise ChatError(errors.BAD_NAME, USER_RULE)
        if code not in CLOSE_CODES:
            raise ChatError(errors.BAD_FRAME, "'code' must be 1000, 1001, 1008 or 4000-4999")
        if len(reason.encode()) > 123:
            raise ChatError(errors.BAD_FRAME, "'reason' is longer than 123 bytes")
        sessions = self.server.sessions.of_user(user)
        if revoke:
            self._revoke(user)  # the reload closes the user's sessions with 4003 (revoked)
        for session in sessions if not revoke else ():
            if session.connection is not None:
                session.connection.close_with(code, reason)
        self._log.info(
            "server API: closed {count} connection(s) of {user}{revoked}",
            count=len(sessions),
            user=user,
            revoked=" and revoked the user" if revoke else "",
        )
        answer = {"user": user, "closed": len(sessions), "revoked": revoke}
        cluster = self.server.cluster
        if cluster is None:
            return answer
        if revoke:
            code, reason = errors.CLOSE_REVOKED, "revoked"
        told = cluster.disconnects.elsewhere(user, code, reason, revoke)
        return told.addCallback(lambda elsewhere: {**answer, "closed": len(sessions) + elsewhere})

    def _revoke(self, user: str) -> None:
        revocations = self.server.revocations
        if revocations.path is None:
            raise ChatError(NO_REVOCATION_LIST, "[auth] revoked_file is not set")
        if user in revocations.entries:
            return
        stamp = datetime.fromtimestamp(self.server.now(), UTC).isoformat(timespec="seconds")
        try:
            with open(revocations.path, "a", encoding="utf-8") as handle:
                handle.write(f"{user}  # revoked through the server API at {stamp}\n")
        except OSError as error:
            self._log.error(
                "cannot add {user} to the revocation list {path}: {error}",
                user=user,
                path=str(revocations.path),
                error=str(error),
            )
            raise ChatError(errors.UNAVAILABLE, "the revocation list cannot be written") from None
        self.server.reload_revocations()

    def close_room(self, name: str) -> dict | Deferred:
        """Every session in the room leaves it, as if it had sent `leave`. Redis mode: this
        node's at once, then the other nodes are told (disconnects.py); `closed` counts this
        node's sessions and the members connected through other nodes."""
        found = self._find_later(name)
        if isinstance(found, Deferred):
            return found.addCallback(self._close_room)
        return self._close_room(found)

    def _close_room(self, room: Room) -> dict | Deferred:
        elsewhere = len(room.others)
        closed = {"room": room.name, "closed": len(self.server.close_room(room)) + elsewhere}
        cluster = self.server.cluster
        if cluster is None:
            return closed
        told = cluster.disconnects.close_room_elsewhere(room.name)
        return told.addCallback(lambda _: closed)


def _redis_unavailable(failure):
    """Redis did not answer a lookup: `unavailable` (503), so the caller retries."""
    failure.trap(RedisUnavailable, RedisError)
    raise ChatError(errors.UNAVAILABLE, f"Redis does not answer ({failure.value}); retry")
