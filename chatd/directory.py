"""Which rooms exist and which are in memory; who may see them; making and unmaking them.

A room is in memory while it is used. One with no session in it and nothing on its way to the
transcript is *idle*; after `[rooms] idle_unload` it leaves memory, and it is loaded again from
its transcript when it is next joined, paged or posted to. At `[rooms] max_rooms` the longest
idle room makes way for a new one at once, so the cap bounds memory and never refuses a room
that could be made room for. A room in which nothing but presence was ever written leaves no
transcript behind when it unloads: joining and leaving costs no disk for good.

Permissions: declared rooms (`[room:NAME]`) say which roles may join and post; guards (the
support desk) may refuse or allow a room on grounds of their own. New rooms cost the user who
makes them from a per-user budget (`[rooms] creations_per_user` an hour).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd import errors
from chatd.config import HistoryConfig, LimitsConfig, RoomPolicy, RoomsConfig
from chatd.errors import ChatError
from chatd.metrics import Metrics
from chatd.ratelimit import TokenBucket
from chatd.rooms import Room
from chatd.transcript import TranscriptStore, new_epoch

HOUR = 3600.0


class RoomGuard(Protocol):
    def may_see(self, session, room: str, exists: bool) -> bool | None:
        """True or False to decide who may join (and so see) `room`; None to leave it to the
        room's policy."""

    def may_post(self, session, room: Room) -> bool | None: ...


class Replicas(Protocol):
    """Redis mode: where rooms come from (chatd/redis/feeds.py)."""

    def take_on(self, name: str, create_epoch: str | None) -> Deferred: ...

    def let_go(self, room: Room) -> None: ...


class Directory:
    """In Redis mode (`replicas` set) a room is in memory only as a replica that Redis keeps
    current, so rooms are never loaded from transcripts here: `*_later` take them on."""

    _log = Logger()

    def __init__(
        self,
        clock,
        store: TranscriptStore,
        history: HistoryConfig,
        limits: LimitsConfig,
        config: RoomsConfig,
        metrics: Metrics,
        make_epoch: Callable[[], str] = new_epoch,
    ):
        self._clock = clock
        self._store = store
        self._history = history
        self._limits = limits
        self.config = config
        self._make_epoch = make_epoch
        self.rooms: dict[str, Room] = {}
        self.guards: list[RoomGuard] = []
        # Idle rooms by name, oldest idle first, with the time each fell idle.
        self._idle: dict[str, float] = {}
        self._budgets: dict[str, TokenBucket] = {}  # by user id
        metrics.rooms.set_function(lambda: len(self.rooms))
        metrics.members.set_function(lambda: sum(len(r.members) for r in self.rooms.values()))
        self._unloads = metrics.room_unloads
        self._loads = metrics.room_loads
        self.replicas: Replicas | None = None

    def policy(self, name: str) -> RoomPolicy:
        return self.config.policy(name)

    # -- permissions --------------------------------------------------------------------------

    def check_may_see(self, session, name: str) -> None:
        """May this user join the room, and so see its members and history?"""
        for guard in self.guards:
            verdict = guard.may_see(session, name, self.exists(name))
            if verdict is not None:
                break
        else:
            verdict = session.may(self.policy(name).join)
        if not verdict:
            raise ChatError(errors.FORBIDDEN, f"you may not see {name!r}")

    def check_may_post(self, session, room: Room) -> None:
        for guard in self.guards:
            verdict = guard.may_post(session, room)
            if verdict is not None:
                break
        else:
            verdict = session.may(self.policy(room.name).post)
        if not verdict:
            raise ChatError(errors.FORBIDDEN, f"you may not post in {room.name!r}")

    def exists(self, name: str) -> bool:
        return name in self.rooms or self._store.path_of(name).exists()

    # -- finding, loading, creating -----------------------------------------------------------

    def find(self, name: str) -> Room | None:
        """The room, in memory or loaded from its transcript; None if it has none."""
        room = self.rooms.get(name)
        if room is None:
            room = self._load(name)
        return room

    def visible(self, session, name: str) -> Room:
        """An existing room this session may see (for `who` and `history`)."""
        self.check_may_see(session, name)
        room = self.find(name)
        if room is None:
            raise ChatError(errors.UNKNOWN_ROOM, f"there is no room {name!r}")
        return room

    def open(self, session, name: str) -> Room:
        """The room for a join: in memory, loaded, or made anew if this user may make it."""
        room = self.find(name)
        if room is not None:
            return room
        self._may_create(session, name)
        return self._created(session, self._admit(name, self._make_epoch()))

    def _may_create(self, session, name: str) -> None:
        if name not in self.config.declared and not self.config.allow_create:
            raise ChatError(errors.FORBIDDEN, "new rooms cannot be created on this server")
        self._make_way(name)  # before the budget: a refused room costs the user nothing
        if name not in self.config.declared:
            self._spend_budget(session)

    def _created(self, session, room: Room) -> Room:
        self._log.info(
            "{user} created room {room} with epoch {epoch}",
            user=session.user if session is not None else "the server API",
            room=room.name,
            epoch=room.epoch,
        )
        return room

    # -- the same, when the room may have to come from Redis first ----------------------------

    def open_later(self, session, name: str) -> Deferred:
        """`open`, as a Deferred: in Redis mode the room is taken on (or made) there."""
        if self.replicas is None or name in self.rooms:
            return defer.maybeDeferred(self.open, session, name)

        def found(room: Room | None) -> Deferred | Room:
            if room is None:
                self._may_create(session, name)
                made = self.replicas.take_on(name, self._make_epoch())
                return made.addCallback(self._created_for, session)
            self.check_may_see(session, name)  # again: with what Redis says (a ban)
            return room

        return self.replicas.take_on(name, None).addCallback(found)

    def _created_for(self, room: Room, session) -> Room:
        self._created(session, room)
        self.check_may_see(session, room.name)  # again: with what Redis says (a ban)
        return room

    def find_later(self, name: str) -> Deferred:
        """`find`, as a Deferred (Redis mode: taken on there if it exists)."""
        if self.replicas is None or name in self.rooms:
            return defer.maybeDeferred(self.find, name)
        return self.replicas.take_on(name, None)

    def visible_later(self, session, name: str) -> Deferred:
        """`visible`, as a Deferred (Redis mode: taken on there if it exists)."""
        if self.replicas is None or name in self.rooms:
            return defer.maybeDeferred(self.visible, session, name)
        self.check_may_see(session, name)

        def found(room: Room | None) -> Room:
            if room is None:
                raise ChatError(errors.UNKNOWN_ROOM, f"there is no room {name!r}")
            self.check_may_see(session, name)  # again: with what Redis says (a ban)
            return room

        return self.replicas.take_on(name, None).addCallback(found)

    def open_for_server_later(self, name: str) -> Deferred:
        """`open_for_server`, as a Deferred."""
        if self.replicas is None or name in self.rooms:
            return defer.maybeDeferred(self.open_for_server, name)

        def found(room: Room | None) -> Deferred | Room:
            if room is not None:
                return room
            made = self.replicas.take_on(name, self._make_epoch())
            return made.addCallback(lambda room: self._created(None, room))

        return self.replicas.take_on(name, None).addCallback(found)

    def adopt(self, name: str, epoch: str, recent, last_seq: int) -> Room:
        """Redis mode: put a replica in memory (making way at max_rooms)."""
        room = self._admit(name, epoch, recent=recent, last_seq=last_seq)
        self._loads.inc()
        return room

    def open_for_server(self, name: str) -> Room:
        """The room, in memory, loaded, or made anew for the server itself (the server API's
        publish): no user's creation budget applies, nor `allow_create`."""
        room = self.find(name)
        if room is None:
            room = self._created(None, self._admit(name, self._make_epoch()))
        return room

    def _spend_budget(self, session) -> None:
        allowance = self.config.creations_per_user
        now = self._clock.seconds()
        bucket = self._budgets.get(session.user)
        if bucket is None:
            bucket = self._budgets[session.user] = TokenBucket(allowance / HOUR, allowance, now)
        if not bucket.take(now):
            self._log.warn(
                "{user} is over the budget of {allowance} new rooms an hour",
                user=session.user,
                allowance=allowance,
            )
            raise ChatError(
                errors.ROOM_BUDGET,
                f"you may create at most {allowance} rooms an hour; join an existing one",
            )

    def _load(self, name: str) -> Room | None:
        if self.replicas is not None:
            return None  # only Redis knows where the room's history is
        memory_events = self.memory_events(name)
        recovered = self._store.recover(name, keep=memory_events)
        if recovered is None:
            return None
        room = self._admit(
            name,
            recovered.epoch,
            recent=recovered.recent,
            last_seq=recovered.last_seq,
        )
        self._loads.inc()
        self._log.debug(
            "loaded room {room}: epoch {epoch}, seq {seq}",
            room=name,
            epoch=room.epoch,
            seq=room.last_seq,
        )
        return room

    def _make_way(self, name: str) -> None:
        """At max_rooms, unload the longest idle room; refuse if every room is in use."""
        if len(self.rooms) < self.config.max_rooms:
            return
        if not self._idle:
            self._log.warn("refused room {room}: max_rooms rooms are in use", room=name)
            raise ChatError(
                errors.UNAVAILABLE, "the server holds as many rooms as it may; retry later"
            )
        self.unload(self.rooms[next(iter(self._idle))])

    def _admit(self, name: str, epoch: str, **history) -> Room:
        """Put a room in memory, making way at max_rooms by unloading the longest idle one."""
        self._make_way(name)
        room = self.rooms[name] = Room(
            name,
            epoch,
            memory_events=self.memory_events(name),
            retry_window=self._limits.retry_window,
            **history,
        )
        self.touch(room)
        return room

    def memory_events(self, name: str) -> int:
        return self.policy(name).memory_events or self._history.memory_events

    # -- idleness -----------------------------------------------------------------------------

    def touch(self, room: Room) -> None:
        """Something happened in the room: it is idle from now on, or it is in use."""
        self._idle.pop(room.name, None)
        if room.idle and self.rooms.get(room.name) is room:
            self._idle[room.name] = self._clock.seconds()

    def unload(self, room: Room) -> None:
        """Take an idle room out of memory (and its transcript, if nothing was ever said)."""
        del self.rooms[room.name]
        self._idle.pop(room.name, None)
        self._unloads.inc()
        if self.replicas is not None:
            self.replicas.let_go(room)
            return  # the transcripts are the archiver's
        if room.said_anything:
            self._store.release(room.name)
            return
        removed = self._store.remove(room.name)
        self._log.debug(
            "unloaded room {room}; nothing was said in it, so its {count} transcript file(s)"
            " are gone",
            room=room.name,
            count=len(removed),
        )

    def sweep(self) -> None:
        """Unload the rooms idle for `idle_unload`, close idle transcript files, and forget
        creation budgets that are full again."""
        now = self._clock.seconds()
        horizon = now - self.config.idle_unload
        while self._idle:
            name, since = next(iter(self._idle.items()))
            if since > horizon:
                break
            self.unload(self.rooms[name])
        self._store.close_idle()
        for user in [u for u, b in self._budgets.items() if b.full(now)]:
            del self._budgets[user]
