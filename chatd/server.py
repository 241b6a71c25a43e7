"""The chat server's rules, with no network code: what each request does.

The protocol hands every welcomed request here (`handle`), with the session that sent it; the
answer is the reply frame to send, if any. Sessions (sessions.py), rooms in memory and their
permissions (directory.py) and the commit pipeline (pipeline.py) are its parts; extensions such
as the support desk attach through its hooks (`handlers`, `welcome_fields`, `joined_fields`,
`on_session_end`, `on_rename`, `on_start`, `on_shutdown`), the directory's guards and the
pipeline's observers, never through branches here. Redis mode also counts each new session
across the nodes before it is opened (`session_counts`, chatd/redis/session_counts.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd import errors, wire
from chatd.auth import Identity, Revocations
from chatd.config import HistoryConfig, LimitsConfig
from chatd.directory import Directory
from chatd.errors import ChatError
from chatd.events import Event
from chatd.metrics import Metrics
from chatd.pipeline import Pipeline
from chatd.rooms import Draft, Room, message_draft, presence_draft
from chatd.sessions import Session, SessionRegistry
from chatd.transcript import TranscriptStore


class SessionCounter(Protocol):
    """Counts each user's sessions beyond this node (Redis mode)."""

    def claim(self, user: str) -> Deferred: ...

    def release(self, user: str) -> None: ...


# How often idle rooms are unloaded and idle transcript files closed, at most.
SWEEP_INTERVAL = 30.0


class Server:
    _log = Logger()

    def __init__(
        self,
        clock,
        sessions: SessionRegistry,
        directory: Directory,
        pipeline: Pipeline,
        store: TranscriptStore,
        history: HistoryConfig,
        limits: LimitsConfig,
        metrics: Metrics,
        revocations: Revocations | None = None,
    ):
        self.clock = clock
        self.sessions = sessions
        self.directory = directory
        self.pipeline = pipeline
        self.store = store
        self._history = history
        self._limits = limits
        self.metrics = metrics
        self.revocations = revocations or Revocations(None)
        self.desk = None  # the support desk, when [support] is enabled (tap.build_server)
        self.cluster = None  # Redis mode's part of the node (chatd/redis/cluster.py)
        # Redis mode: `claim(user)` a place for a new session among every node's (a Deferred
        # that fails with a ChatError), `release(user)` it when the session ends.
        self.session_counts: SessionCounter | None = None
        self.handlers: dict[str, Callable[[Session, Any], bytes | None]] = {
            "join": self.join,
            "leave": self.leave,
            "say": self.say,
            "who": self.who,
            "history": self.history,
        }
        self.welcome_fields: list[Callable[[Session], dict]] = []
        self.joined_fields: list[Callable[[Session, Room], dict]] = []
        self.on_session_end: list[Callable[[Session], None]] = []
        # (user, name): the user's display name changed on this node (a refresh, a profile).
        self.on_rename: list[Callable[[str, str], None]] = []
        self.on_start: list[Callable[[], None]] = []
        self.on_shutdown: list[Callable[[], None]] = []
        self._sweep_call = None
        pipeline.settled.append(directory.touch)
        metrics.users.set_function(lambda: sessions.user_count)
        metrics.sessions.set_function(lambda: sessions.session_count)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.revocations.load()
        for hook in self.on_start:
            hook()
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        interval = min(max(self.directory.config.idle_unload / 4, 1.0), SWEEP_INTERVAL)
        self._sweep_call = self.clock.callLater(interval, self._sweep)

    def _sweep(self) -> None:
        self.directory.sweep()
        self._schedule_sweep()

    def shutdown(self) -> None:
        """Commit what is pending and close the transcripts; later events are not recorded."""
        if self._sweep_call is not None and self._sweep_call.active():
            self._sweep_call.cancel()
        for hook in self.on_shutdown:
            hook()
        self.pipeline.shutdown()

    @property
    def rooms(self) -> dict[str, Room]:
        return self.directory.rooms

    @property
    def user_count(self) -> int:
        return self.sessions.user_count

    # -- sessions -----------------------------------------------------------------------------

    def hello(
        self, connection, identity: Identity, hello: wire.Hello
    ) -> tuple[Session, dict] | Deferred:
        """Welcome a connection: a new session, another of its user's, or one taken over.

        In Redis mode a new session first claims its place among the user's sessions on every
        node (`[auth] max_sessions_per_user` counts them all): the welcome is then a Deferred."""
        if self.revocations.revokes(identity.user, identity.token_id):
            raise ChatError(errors.AUTH_FAILED, "this token or user has been revoked")
        counts = self.session_counts
        if counts is None or self.sessions.resumable(identity.user, hello.resume) is not None:
            return self._open(connection, identity, hello)
        claimed = counts.claim(identity.user)
        return claimed.addCallback(lambda _: self._open_claimed(connection, identity, hello))

    def _open_claimed(self, connection, identity: Identity, hello: wire.Hello):
        """`_open` with a place claimed: given back unless a new session takes it."""
        try:
            session, fields = self._open(connection, identity, hello)
        except ChatError:
            self.session_counts.release(identity.user)
            raise
        if fields["resumed"]:  # taken over meanwhile after all: no new session
            self.session_counts.release(identity.user)
        return session, fields

    def _open(self, connection, identity: Identity, hello: wire.Hello) -> tuple[Session, dict]:
        opened = self.sessions.open(connection, identity, secret=hello.secret, resume=hello.resume)
        session = opened.session
        if opened.replaced is not None:
            self.metrics.session_ends.labels("replaced").inc()
            opened.replaced.replaced()
        self._watch_expiry(session)
        fields = {
            "user": session.user,
            "name": session.name,
            "roles": sorted(session.roles),
            "session": session.id,
            "resume": session.resume,
            "resumed": opened.replaced is not None,
        }
        if opened.user_secret is not None:
            fields["secret"] = opened.user_secret
        for extra in self.welcome_fields:
            fields.update(extra(session))
        return session, fields

    def refresh(self, session: Session, identity: Identity, ref: str | None) -> bytes:
        if self.revocations.revokes(identity.user, identity.token_id):
            raise ChatError(errors.AUTH_FAILED, "this token or user has been revoked", ref)
        before = session.name
        try:
            self.sessions.refresh(session, identity)
        except ChatError as error:
            error.ref = ref
            raise
        for name in session.rooms:  # the new token may carry a new display name
            self.directory.rooms[name].members[session.user].name = session.name
        if session.name != before:
            for hook in self.on_rename:
                hook(session.user, session.name)
        self._watch_expiry(session)
        return wire.refreshed(session.expires_at, ref)

    def rename(self, user: str, name: str) -> None:
        """The user's display name is `name` from now on, on every session and in every room
        they are in (what `who` and `joined` list)."""
        for session in self.sessions.of_user(user):
            session.name = name
            for room in session.rooms:
                self.directory.rooms[room].members[session.user].name = name
        for hook in self.on_rename:
            hook(user, name)

    def _watch_expiry(self, session: Session) -> None:
        self._forget_expiry(session)
        if session.expires_at is not None:
            delay = max(session.expires_at - self.clock.seconds(), 0.0)
            session.expiry_call = self.clock.callLater(delay, self._expired, session)

    def _forget_expiry(self, session: Session) -> None:
        if session.expiry_call is not None and session.expiry_call.active():
            session.expiry_call.cancel()
        session.expiry_call = None

    def _expired(self, session: Session) -> None:
        session.expiry_call = None
        self._end(session, "token_expired", errors.CLOSE_TOKEN_EXPIRED, "token expired")

    def _end(self, session: Session, reason: str, code: int, why: str) -> None:
        """Close a session's connection on the server's own account (counted by reason)."""
        self.metrics.session_ends.labels(reason).inc()
        self._log.info(
            "closing {user}'s session {session} with {code}: {why}",
            user=session.user,
            session=session.id,
            code=code,
            why=why,
        )
        session.connection.close_with(code, why)

    def reload_revocations(self) -> None:
        """SIGHUP: read `[auth] revoked_file` again and close the sessions it now revokes."""
        try:
            self.revocations.load()
        except OSError as error:
            self._log.error(
                "cannot read the revocation list {path}: {error}; keeping the previous one",
                path=str(self.revocations.path),
                error=str(error),
            )
            return
        for session in self.sessions:
            if self.revocations.revokes(session.user, session.token_id):
                self._end(session, "revoked", errors.CLOSE_REVOKED, "revoked")

    def disconnect(self, session: Session) -> None:
        """The session's connection closed: it leaves every room it had joined."""
        for hook in self.on_session_end:
            hook(session)
        self._forget_expiry(session)
        self.sessions.close(session)
        for name in sorted(session.rooms):
            self._part(session, self.directory.rooms[name])
        # Late replies (an ack committed after the close) find no connection; and nothing the
        # session is still referenced from keeps the closed connection alive.
        session.connection = None

    # -- requests -----------------------------------------------------------------------------

    def handle(self, session: Session, frame) -> bytes | None:
        """Serve a welcomed session's request; the reply to send, if any."""
        return self.handlers[frame.type](session, frame)

    def join(self, session: Session, request: wire.Join) -> bytes | Deferred:
        directory = self.directory
        directory.check_may_see(session, request.room)
        self._check_room_count(session, request.room)
        if directory.replicas is None or request.room in directory.rooms:
            return self._enter(session, request, directory.open(session, request.room))
        # _enter checks the count again: the session may have joined others meanwhile.
        return directory.open_later(session, request.room).addCallback(
            lambda room: self._enter(session, request, room)
        )

    def _check_room_count(self, session: Session, name: str) -> None:
        limit = self._limits.max_rooms_per_connection
        if name not in session.rooms and len(session.rooms) >= limit:
            raise ChatError(errors.TOO_MANY_ROOMS, f"a connection may join at most {limit} rooms")

    def _enter(self, session: Session, request: wire.Join, room: Room) -> bytes | None:
        if session.connection is None:
            return None  # gone while the room was being taken on (Redis mode)
        directory = self.directory
        self._check_room_count(session, room.name)
        if room.add(session):
            room.others.pop(session.user, None)
            draft = presence_draft(session.user, session.name, "join", self.now())
            self.post(room, draft, undo=partial(self._join_failed, session, room, request.ref))
        session.rooms.add(room.name)
        directory.touch(room)
        if directory.policy(room.name).replay:
            history, recovered = room.replay(
                request.since, self._history.replay_events, session.roles
            )
        else:
            history, recovered = [], False
        if request.since is not None:
            self.metrics.resumes.labels("recovered" if recovered else "not_recovered").inc()
        extra = {}
        for fields in self.joined_fields:
            extra.update(fields(session, room))
        return wire.joined(
            room.name,
            room.epoch,
            room.committed_seq,
            room.names(),
            history,
            recovered,
            request.ref,
            extra,
        )

    def _join_failed(self, session: Session, room: Room, ref: str | None) -> None:
        """The join's presence event could not be stored: the session is not in the room after
        all (its seq is given out again), and the client is told to retry."""
        if session in room.sessions:
            session.rooms.discard(room.name)
            room.remove(session)
            self.directory.touch(room)
        if session.connection is not None:
            message = f"could not join {room.name!r}: its transcript cannot be written; retry later"
            self.metrics.errors.labels(errors.UNAVAILABLE).inc()
            session.connection.send(wire.error(errors.UNAVAILABLE, message, ref))

    def leave(self, session: Session, request: wire.Leave) -> bytes:
        self._part(session, self.joined_room(session, request.room))
        return wire.left(request.room, request.ref)

    def say(self, session: Session, request: wire.Say) -> None:
        room = self.joined_room(session, request.room)
        self.directory.check_may_post(session, room)
        self.metrics.messages_in.inc()
        draft = message_draft(session.user, session.name, request.id, request.text, self.now())
        self.post(room, draft, ack_to=session)

    def who(self, session: Session, request: wire.Who) -> bytes | Deferred:
        return self._visible(session, request.room, partial(self._who, session, request))

    def _who(self, session: Session, request: wire.Who, room: Room) -> bytes:
        self.directory.touch(room)
        return wire.members(room.name, room.names(), request.ref)

    def history(self, session: Session, request: wire.History) -> bytes | Deferred:
        return self._visible(session, request.room, partial(self._history_of, session, request))

    def _history_of(self, session: Session, request: wire.History, room: Room) -> bytes:
        self.directory.touch(room)
        if not self.directory.policy(room.name).replay:
            raise ChatError(errors.FORBIDDEN, f"{room.name!r} does not replay its history")
        history = self._history
        limit = min(request.limit or history.replay_events, history.page_limit)
        before = request.before if request.before is not None else room.committed_seq + 1
        events = self.events_before(room, before, limit, session.roles)
        if isinstance(events, Deferred):
            return events.addCallback(self._history_page, room, request.ref)
        return self._history_page(events, room, request.ref)

    @staticmethod
    def _history_page(events: list[bytes], room: Room, ref: str | None) -> bytes:
        more = bool(events) and Event.from_line(events[0]).seq > 1
        return wire.history(room.name, room.epoch, events, more, ref)

    def events_before(
        self, room: Room, before: int, limit: int, roles: frozenset[str] | None = None
    ) -> list[bytes] | Deferred:
        """A page of the room's history before `before`: from memory, else the transcripts;
        in Redis mode from the room's stream first (a Deferred), which holds what the archiver
        has not written yet."""
        events = room.before(before, limit, roles)
        if events is not None:
            return events
        if self.cluster is not None:
            return self.cluster.history.before(room, before, limit, roles)
        return self.store.events_before(room.name, room.epoch, before, limit, roles)

    def _visible(self, session: Session, name: str, then: Callable[[Room], bytes]):
        """`then(room)` for a room this session may see: at once, or (Redis mode, a room this
        node does not hold yet) once it is taken on."""
        directory = self.directory
        if directory.replicas is None or name in directory.rooms:
            return then(directory.visible(session, name))
        return directory.visible_later(session, name).addCallback(then)

    # -- shared by the requests and the extensions --------------------------------------------

    def now(self) -> float:
        return self.clock.seconds()

    def post(self, room: Room, draft: Draft, ack_to: Session | None = None, undo=None) -> None:
        self.pipeline.post(room, draft, ack_to, undo)
        self.directory.touch(room)

    def joined_room(self, session: Session, name: str) -> Room:
        if name not in session.rooms:
            raise ChatError(errors.NOT_JOINED, f"you have not joined {name!r}")
        return self.directory.rooms[name]

    def close_room(self, room: Room) -> list[Session]:
        """Every session in the room leaves it, as if it had sent `leave`, and is told so with
        an unsolicited `left` (the server API's close)."""
        sessions = list(room.sessions)
        for session in sessions:
            self._part(session, room)
            if session.connection is not None:
                session.connection.send(wire.left(room.name, None))
        return sessions

    def _part(self, session: Session, room: Room) -> None:
        session.rooms.discard(room.name)
        if room.remove(session):
            self.post(room, presence_draft(session.user, session.name, "leave", self.now()))
        self.directory.touch(room)
