"""The broadcaster: owns the rooms and the connected users, sequences events and fans them out.

Events are committed in batches, once per reactor turn (group commit): every event posted
during a turn is appended to its room's transcript, the transcripts are flushed (and fsynced
with `[transcripts] fsync = batch`), and only then is each event added to its room's history,
sent to the room's members, and acknowledged to its sender. A client therefore never sees,
and is never acknowledged, an event that a crash could take back.

A room's events of one batch go to each member together, in one write (one system call, in
the daemon), the sender's acks after them in the same write.

The broadcaster knows nothing of WebSockets: a connection is anything with `send(bytes)` for
its own replies and `send_prepared(frames)` for fan-out, where `frames` is whatever the
`prepare` callable made of a list of events' JSON lines (in the daemon, the bytes of their
WebSocket frames, made once and shared by every member).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.logger import Logger

from chatd import wire
from chatd.auth import Identity
from chatd.config import ANYONE, HistoryConfig, LimitsConfig, RoomPolicy, RoomsConfig
from chatd.errors import Refused
from chatd.metrics import Metrics
from chatd.rooms import Event, Room
from chatd.support import PREFIX as SUPPORT_PREFIX
from chatd.support import SupportDesk
from chatd.transcript import TranscriptStore, new_epoch

UNSTORED = "the message could not be stored; retry later"


class Connection(Protocol):
    def send(self, payload: bytes) -> None: ...

    def send_prepared(self, frames: Any, replies: list[bytes] = ()) -> None:
        """Send prepared frames, then these replies of this connection's own, in one write."""


@dataclass(eq=False)
class Session:
    """A connected, welcomed user and the rooms it has joined."""

    user: str
    roles: frozenset[str]
    connection: Connection
    rooms: set[str] = field(default_factory=set)

    def may(self, allowed: tuple[str, ...]) -> bool:
        """True if `allowed` (role names, or "*") admits this user."""
        return ANYONE in allowed or not self.roles.isdisjoint(allowed)


@dataclass(slots=True)
class _Posted:
    room: Room
    event: Event | None  # None for a retry that only needs its ack
    ack_to: Session | None
    client_id: str | None
    seq: int


class Broadcaster:
    _log = Logger()

    def __init__(
        self,
        clock,
        store: TranscriptStore,
        history: HistoryConfig,
        limits: LimitsConfig,
        fsync: bool,
        prepare: Callable[[list[bytes]], Any],
        make_epoch: Callable[[], str] = new_epoch,
        metrics: Metrics | None = None,
        rooms: RoomsConfig | None = None,
        support: SupportDesk | None = None,
    ):
        self._clock = clock
        self._store = store
        self._history = history
        self._limits = limits
        self._fsync = fsync
        self._prepare = prepare
        self._make_epoch = make_epoch
        self._policies = rooms or RoomsConfig(allow_create=True, max_rooms=10_000, declared={})
        self.support = support
        self.rooms: dict[str, Room] = {}
        self._users: dict[str, Session] = {}  # by case-folded name
        self._batch: list[_Posted] = []
        self._commit_call = None
        self._closed = False
        self.metrics = metrics = metrics or Metrics()
        metrics.rooms.set_function(lambda: len(self.rooms))
        metrics.members.set_function(lambda: sum(len(r.members) for r in self.rooms.values()))
        metrics.users.set_function(lambda: len(self._users))

    # -- lifecycle ----------------------------------------------------------------------------

    def recover(self) -> None:
        """Load every room that has a transcript (its epoch, last seq and recent history),
        then create the declared rooms that have none yet."""
        for name in self._store.rooms():
            room = self._recover_room(name)
            if room is not None:
                self._log.info(
                    "recovered room {room}: epoch {epoch}, seq {seq}, {count} events in memory",
                    room=name,
                    epoch=room.epoch,
                    seq=room.last_seq,
                    count=len(room.latest(self._history.memory_events)),
                )
        for name in self._policies.declared:
            if name not in self.rooms:
                self._create_room(name)
        if self.support is not None:
            for room in self.rooms.values():
                if room.name.startswith(SUPPORT_PREFIX):
                    self.support.recover(room)

    def _memory_events(self, policy: RoomPolicy) -> int:
        return policy.memory_events or self._history.memory_events

    def _recover_room(self, name: str) -> Room | None:
        memory_events = self._memory_events(self._policies.policy(name))
        recovered = self._store.recover(name, keep=memory_events)
        if recovered is None:
            return None
        room = self.rooms[name] = Room(
            name,
            recovered.epoch,
            memory_events=memory_events,
            retry_window=self._limits.retry_window,
            recent=recovered.recent,
            last_seq=recovered.last_seq,
        )
        return room

    def shutdown(self) -> None:
        """Commit what is pending and close the transcripts; later events are not recorded."""
        if self._commit_call is not None and self._commit_call.active():
            self._commit_call.cancel()
        self._commit()
        self._store.close()
        self._closed = True

    @property
    def user_count(self) -> int:
        return len(self._users)

    # -- requests -----------------------------------------------------------------------------

    def hello(self, connection: Connection, identity: Identity) -> Session:
        key = identity.user.casefold()
        if key in self._users:
            raise Refused(wire.NAME_TAKEN, f"the name {identity.user!r} is in use")
        session = self._users[key] = Session(identity.user, identity.roles, connection)
        return session

    def join(self, session: Session, request: wire.Join) -> bytes:
        self._check_may_see(session, request.room)
        policy = self._policies.policy(request.room)
        if (
            request.room not in session.rooms
            and len(session.rooms) >= self._limits.max_rooms_per_connection
        ):
            raise Refused(
                wire.TOO_MANY_ROOMS,
                f"a connection may join at most {self._limits.max_rooms_per_connection} rooms",
            )
        room = self.rooms.get(request.room) or self._open_room(request.room)
        if session.user not in room.members:
            room.members[session.user] = session
            session.rooms.add(room.name)
            self._post(room, room.new_presence(session.user, "join", self._clock.seconds()))
        if policy.replay:
            history, recovered = room.replay(request.since, self._history.replay_events)
        else:
            history, recovered = [], False
        if request.since is not None:
            self.metrics.resumes.labels("recovered" if recovered else "not_recovered").inc()
        return wire.joined(
            room.name,
            room.epoch,
            room.committed_seq,
            list(room.members),
            history,
            recovered,
            request.ref,
        )

    def _open_room(self, name: str) -> Room:
        """A room not in memory: recovered from its transcript, or created if allowed."""
        room = self._recover_room(name)
        if room is not None:
            return room
        if name not in self._policies.declared and not self._policies.allow_create:
            raise Refused(wire.FORBIDDEN, "new rooms cannot be created on this server")
        if len(self.rooms) >= self._policies.max_rooms:
            self._log.warn("refused to create room {room}: at max_rooms", room=name)
            raise Refused(wire.FORBIDDEN, "this server has as many rooms as it may hold")
        return self._create_room(name)

    def _create_room(self, name: str) -> Room:
        room = self.rooms[name] = Room(
            name,
            self._make_epoch(),
            memory_events=self._memory_events(self._policies.policy(name)),
            retry_window=self._limits.retry_window,
        )
        self._log.info("created room {room} with epoch {epoch}", room=name, epoch=room.epoch)
        return room

    def leave(self, session: Session, room_name: str) -> None:
        room = self._joined_room(session, room_name)
        self._remove_member(session, room)

    def say(self, session: Session, request: wire.Say) -> None:
        room = self._joined_room(session, request.room)
        if not session.may(self._policies.policy(room.name).post):
            raise Refused(wire.FORBIDDEN, f"you may not post in {room.name!r}")
        now = self._clock.seconds()
        seq = room.seq_of_retry(session.user, request.id, now)
        if seq is not None:
            self._batch.append(_Posted(room, None, session, request.id, seq))
            self._schedule_commit()
            return
        event = room.new_message(session.user, request.id, request.text, now)
        self.metrics.messages_in.inc()
        self._post(room, event, ack_to=session, client_id=request.id)

    def who(self, session: Session, request: wire.Who) -> bytes:
        room = self._visible_room(session, request.room)
        return wire.members(room.name, list(room.members), request.ref)

    def history(self, session: Session, request: wire.History) -> bytes:
        room = self._visible_room(session, request.room)
        if not self._policies.policy(room.name).replay:
            raise Refused(wire.FORBIDDEN, f"{room.name!r} does not replay its history")
        limit = min(request.limit or self._history.replay_events, self._history.page_limit)
        before = request.before if request.before is not None else room.committed_seq + 1
        events = room.before(before, limit)
        if events is None:
            events = self._store.events_before(room.name, room.epoch, before, limit)
        more = bool(events) and Event.from_line(events[0]).seq > 1
        return wire.history(room.name, room.epoch, events, more, request.ref)

    def support_room(self, session: Session) -> str | None:
        """The customer's own conversation room, when the support desk is on."""
        return None if self.support is None else self.support.customer_room(session)

    def queue(self, session: Session, request: wire.Queue) -> bytes:
        """Subscribe an agent to the support queue; the reply is the current queue."""
        if self.support is None or not self.support.is_agent(session):
            raise Refused(wire.FORBIDDEN, "only support agents may watch the queue")
        return self.support.watch(session, request.ref)

    def disconnect(self, session: Session) -> None:
        if self.support is not None:
            self.support.forget(session)
        if self._users.get(session.user.casefold()) is session:
            del self._users[session.user.casefold()]
        for room_name in sorted(session.rooms):
            self._remove_member(session, self.rooms[room_name])

    # -- internals ----------------------------------------------------------------------------

    def _check_may_see(self, session: Session, name: str) -> None:
        """May this user join the room, and so see its members and history?"""
        if self.support is not None and name.startswith(SUPPORT_PREFIX):
            allowed = self.support.may_see(session, name, exists=name in self.rooms)
        else:
            allowed = session.may(self._policies.policy(name).join)
        if not allowed:
            raise Refused(wire.FORBIDDEN, f"you may not see {name!r}")

    def _visible_room(self, session: Session, name: str) -> Room:
        self._check_may_see(session, name)
        room = self.rooms.get(name)
        if room is None:
            raise Refused(wire.UNKNOWN_ROOM, f"there is no room {name!r}")
        return room

    def _joined_room(self, session: Session, name: str) -> Room:
        if name not in session.rooms:
            raise Refused(wire.NOT_JOINED, f"you have not joined {name!r}")
        return self.rooms[name]

    def _remove_member(self, session: Session, room: Room) -> None:
        session.rooms.discard(room.name)
        if room.members.get(session.user) is session:
            del room.members[session.user]
            self._post(room, room.new_presence(session.user, "leave", self._clock.seconds()))

    def _post(
        self,
        room: Room,
        event: Event,
        ack_to: Session | None = None,
        client_id: str | None = None,
    ) -> None:
        if self._closed:
            self._log.debug(
                "not recording {room} seq {seq}: shut down", room=room.name, seq=event.seq
            )
            return
        self._store.append(room.name, event.line, event.ts)
        self._batch.append(_Posted(room, event, ack_to, client_id, event.seq))
        self._schedule_commit()

    def _schedule_commit(self) -> None:
        if self._commit_call is None:
            self._commit_call = self._clock.callLater(0, self._commit)

    def _commit(self) -> None:
        self._commit_call = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        failed = {room for room, _error in self._failed_writes()}
        committed: dict[Room, list[Event]] = {}
        # A sender's acks ride in the same write as its room's events, as long as they stay
        # in the order of its requests: only while they are all for one room and follow an
        # event of their own. From its first reply that cannot ride (an error, the ack of a
        # retry, another room, a room it has left), its replies follow all deliveries.
        acks: dict[Room, dict[Session, list[bytes]]] = {}
        riding: dict[Session, Room] = {}
        replies: list[tuple[Session, bytes]] = []
        late: set[Session] = set()
        for posted in batch:
            room, event, sender = posted.room, posted.event, posted.ack_to
            if room.name in failed:
                if event is not None:
                    room.abandon(event)
                if sender is not None:
                    late.add(sender)
                    replies.append(
                        (sender, wire.error(wire.UNAVAILABLE, UNSTORED, posted.client_id))
                    )
                continue
            if event is not None:
                room.commit(event)
                committed.setdefault(room, []).append(event)
            if sender is None:
                continue
            ack = wire.ack(posted.client_id, posted.seq)
            if (
                event is not None
                and sender not in late
                and riding.setdefault(sender, room) is room
                and room.members.get(sender.user) is sender
            ):
                acks.setdefault(room, {}).setdefault(sender, []).append(ack)
            else:
                late.add(sender)
                replies.append((sender, ack))
        for room, events in committed.items():
            self._deliver(room, events, acks.get(room))
        for session, reply in replies:
            session.connection.send(reply)

    def _deliver(
        self, room: Room, events: list[Event], acks: dict[Session, list[bytes]] | None
    ) -> None:
        lines = [event.line for event in events]
        frames = self._prepare(lines)
        for member in room.members.values():
            own = acks.get(member) if acks else None
            if own is None:
                member.connection.send_prepared(frames)
            else:
                member.connection.send_prepared(frames, own)
        members = len(room.members)
        self.metrics.events.inc(len(events))
        self.metrics.deliveries.inc(members * len(events))
        self.metrics.bytes_out.inc(members * sum(map(len, lines)))
        if self.support is not None and room.name.startswith(SUPPORT_PREFIX):
            for event in events:
                self.support.observe(room, event)

    def _failed_writes(self) -> list[tuple[str, OSError]]:
        started = time.perf_counter()
        failures = self._store.flush(self._fsync)
        self.metrics.transcript_write.observe(time.perf_counter() - started)
        for room, error in failures:
            self._log.critical(
                "cannot write the transcript of room {room}: {error}; its events of this"
                " batch were not delivered and their senders were told to retry",
                room=room,
                error=str(error),
            )
        return failures
