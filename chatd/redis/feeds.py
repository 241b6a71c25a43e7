"""Rooms as a node holds them in Redis mode: replicas fed from pub/sub, in seq order.

A node takes a room on when one of its clients needs it: it subscribes to the room's channel
first, then reads epoch, seq, members and the latest events in one script (sync.lua), so that
nothing sequenced after that snapshot can be missed. From then on every event reaches the
room from the channel, the events this node posted included, and is delivered only in seq
order: an event that skips a seq waits while the missing ones are read from the room's log
(XRANGE), and so does everything after a subscription that was lost and made again. Pub/sub
is at most once; the log is what makes delivery exact.

An event of another epoch means Redis lost the room's history: the node lets the room's
sessions go (1012, so that clients reconnect and join again) and forgets its replica.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd.events import Event
from chatd.redis.client import RedisLink, Script, hash_of
from chatd.redis.keys import Keys
from chatd.rooms import Room

SYNC = Script("sync")
FILL_COUNT = 1000
CLOSE_SERVICE_RESTART = 1012
# A message on a room's channel that is no event (typing, read markers) begins with this: an
# event's line begins with '{'.
EPHEMERAL = b"~"


class RoomFeed:
    """One room's replica state: events waiting for their turn, and acks waiting for events."""

    def __init__(self, room: Room):
        self.room = room
        self.early: list[bytes] | None = []  # lines heard while the snapshot is being read
        self.waiting: dict[int, Event] = {}  # sequenced but not yet deliverable, by seq
        self.ready: list[Event] = []  # deliverable at the end of this chunk
        self.acks: list[tuple[int, Deferred]] = []  # (seq, fired once it is delivered)
        self.own: set[int] = set()  # seqs this node posted (its once-only observers)
        self.known_seq = 0  # the highest seq Redis is known to have given
        self.filling = False
        self.gap_call = None

    @property
    def next_seq(self) -> int:
        return self.room.committed_seq + 1


class Feeds:
    _log = Logger()

    def __init__(
        self,
        clock,
        commands: RedisLink,
        subscriber: RedisLink,
        keys: Keys,
        make_room: Callable[[str, str, list[Event], int], Room],
        deliver: Callable[[Room, list[Event], list[Event]], None],
        reset: Callable[[Room, str], None],
        memory_events: Callable[[str], int],
        read_transcript: Callable[[str, str, int, int], list[Event]],
        gap_timeout: float,
        ephemeral: Callable[[Room, bytes], None] = lambda room, payload: None,
        adopted: Callable[[Room, list[bytes], list[bytes]], None] = lambda room, r, s: None,
    ):
        self._clock = clock
        self._commands = commands
        self._subscriber = subscriber
        self._keys = keys
        self._make_room = make_room
        self._deliver = deliver
        self._reset = reset
        self._memory_events = memory_events
        self._read_transcript = read_transcript
        self._gap_timeout = gap_timeout
        self._ephemeral = ephemeral
        # A room just taken on, with its read markers and sanctions (flat HGETALL replies).
        self._adopted = adopted
        self.feeds: dict[str, RoomFeed] = {}  # by room name, for the rooms taken on
        self._by_channel: dict[bytes, RoomFeed] = {}
        self._loading: dict[str, list[Deferred]] = {}
        self._pending_delivery: set[RoomFeed] = set()
        # Channels that are no room's (the probe, node-wide notices), and patterns: each with
        # what hears its messages; subscribed again with the rooms' channels.
        self._listeners: dict[bytes, Callable[[bytes], None]] = {}
        self._patterns: dict[bytes, Callable[[bytes, bytes], None]] = {}
        subscriber.on_up.append(self._resubscribe)

    def listen(self, channel: bytes, hear: Callable[[bytes], None]) -> None:
        """Hear a channel that is no room's: `hear(payload)` for each message."""
        self._listeners[channel] = hear
        if self._subscriber.connected:
            self._subscriber.execute("SUBSCRIBE", channel).addErrback(lambda _failure: None)

    def listen_pattern(self, pattern: bytes, hear: Callable[[bytes, bytes], None]) -> None:
        """Hear every channel matching a glob pattern: `hear(channel, payload)`, rooms'
        channels included (whether or not this node holds the room)."""
        self._patterns[pattern] = hear
        if self._subscriber.connected:
            self._subscriber.execute("PSUBSCRIBE", pattern).addErrback(lambda _failure: None)

    # -- taking rooms on and letting them go --------------------------------------------------

    def take_on(self, name: str, create_epoch: str | None) -> Deferred:
        """The room's replica, subscribed and current; None if Redis has no such room (and
        `create_epoch` is None), else the room is made with that epoch if it is new."""
        feed = self.feeds.get(name)
        if feed is not None and feed.early is None:
            return defer.succeed(feed.room)
        waiters = self._loading.get(name)
        result: Deferred = Deferred()
        if waiters is not None:
            waiters.append(result)
            return result
        self._loading[name] = [result]
        channel = self._keys.channel(name).encode()
        early: list[bytes] = []
        self._by_channel[channel] = _Early(early)  # type: ignore[assignment]
        subscribed = self._subscriber.execute("SUBSCRIBE", channel)
        subscribed.addCallback(lambda _reply: self._snapshot(name, create_epoch))
        subscribed.addCallback(self._took_on, name, channel, early)
        subscribed.addErrback(self._not_taken_on, name, channel)
        return result

    def _snapshot(self, name: str, create_epoch: str | None) -> Deferred:
        keys = self._keys
        return self._commands.run(
            SYNC,
            [
                keys.meta(name),
                keys.log(name),
                keys.names(name),
                keys.reads(name),
                keys.sanctions(name),
                keys.rooms,
            ],
            [self._memory_events(name), create_epoch or "", name],
        )

    def _took_on(self, reply, name: str, channel: bytes, early: list[bytes]) -> None:
        if reply[0] is None:
            self._by_channel.pop(channel, None)
            self._unsubscribe(channel)
            for waiter in self._loading.pop(name):
                waiter.callback(None)
            return
        epoch, seq, names, lines = reply[0].decode(), reply[1], reply[2], reply[3]
        recent = [Event.from_line(line) for line in lines]
        room = self._make_room(name, epoch, recent, seq)  # may refuse (max_rooms): errback
        room.others = hash_of(names)
        self._adopted(room, reply[4], reply[5])
        feed = self.feeds[name] = RoomFeed(room)
        feed.known_seq = seq
        self._by_channel[channel] = feed
        feed.early = None
        for line in early:
            self._offer(feed, line)
        self._flush()
        for waiter in self._loading.pop(name):
            waiter.callback(room)

    def _not_taken_on(self, failure, name: str, channel: bytes) -> None:
        self._by_channel.pop(channel, None)
        self._unsubscribe(channel)
        for waiter in self._loading.pop(name, []):
            waiter.errback(failure)

    def let_go(self, room: Room) -> None:
        """The room left this node's memory: stop hearing it."""
        feed = self.feeds.pop(room.name, None)
        if feed is None:
            return
        channel = self._keys.channel(room.name).encode()
        if self._by_channel.get(channel) is feed:
            del self._by_channel[channel]
            self._unsubscribe(channel)
        self._end(feed)

    def _end(self, feed: RoomFeed) -> None:
        if feed.gap_call is not None and feed.gap_call.active():
            feed.gap_call.cancel()
        feed.gap_call = None
        acks, feed.acks = feed.acks, []
        for _seq, waiter in acks:  # durable all the same: acknowledge
            waiter.callback(None)

    def _unsubscribe(self, channel: bytes) -> None:
        if self._subscriber.connected:
            self._subscriber.execute("UNSUBSCRIBE", channel).addErrback(lambda _failure: None)

    # -- hearing events -----------------------------------------------------------------------

    def on_push(self, reply: list) -> None:
        """A pub/sub message: [b"message", channel, line] or [b"pmessage", pattern, channel,
        line]."""
        if len(reply) == 4:
            hear = self._patterns.get(reply[1])
            if hear is not None:
                hear(reply[2], reply[3])
            return
        channel, line = reply[1], reply[2]
        feed = self._by_channel.get(channel)
        if feed is None:
            hear = self._listeners.get(channel)
            if hear is not None:
                hear(line)
            return
        if line[:1] == EPHEMERAL:
            if not isinstance(feed, _Early):  # nothing to catch up on: it was of the moment
                self._ephemeral(feed.room, line[1:])
            return
        if isinstance(feed, _Early):
            feed.lines.append(line)
            return
        self._offer(feed, line)

    def end_of_chunk(self) -> None:
        self._flush()

    def _offer(self, feed: RoomFeed, line: bytes) -> None:
        try:
            event = Event.from_line(line)
        except ValueError as error:
            self._log.error(
                "an unreadable event in room {room}'s channel: {error}",
                room=feed.room.name,
                error=str(error),
            )
            return
        self._accept(feed, event)

    def _accept(self, feed: RoomFeed, event: Event) -> None:
        room = feed.room
        if event.epoch != room.epoch:
            self._epoch_changed(feed, event.epoch)
            return
        feed.known_seq = max(feed.known_seq, event.seq)
        expected = feed.next_seq + len(feed.ready)
        if event.seq < expected or event.seq in feed.waiting:
            return  # heard twice (the channel and a fill)
        if event.seq > expected:
            feed.waiting[event.seq] = event
            self._fill(feed)
            return
        feed.ready.append(event)
        expected += 1
        while expected in feed.waiting:
            feed.ready.append(feed.waiting.pop(expected))
            expected += 1
        self._pending_delivery.add(feed)

    def _flush(self) -> None:
        pending, self._pending_delivery = self._pending_delivery, set()
        for feed in pending:
            if not feed.ready or self.feeds.get(feed.room.name) is not feed:
                continue
            events, feed.ready = feed.ready, []
            own = [event for event in events if event.seq in feed.own]
            feed.own.difference_update(event.seq for event in own)
            self._deliver(feed.room, events, own)
            self._settle_acks(feed)

    def _settle_acks(self, feed: RoomFeed) -> None:
        if not feed.acks:
            return
        committed = feed.room.committed_seq
        due = [waiter for seq, waiter in feed.acks if seq <= committed]
        if due:
            feed.acks = [(seq, waiter) for seq, waiter in feed.acks if seq > committed]
            for waiter in due:
                waiter.callback(None)

    # -- gaps ---------------------------------------------------------------------------------

    def _fill(self, feed: RoomFeed) -> None:
        """Read what the channel skipped from the room's log, then deliver in order."""
        if feed.filling or feed.early is not None:
            return
        feed.filling = True
        start = feed.next_seq + len(feed.ready)
        keys = self._keys
        read = self._commands.execute(
            "XRANGE", keys.log(feed.room.name), f"{start}-0", "+", "COUNT", FILL_COUNT
        )
        read.addCallbacks(self._filled, self._fill_failed, (feed, start), None, (feed,))

    def _filled(self, entries, feed: RoomFeed, start: int) -> None:
        feed.filling = False
        if self.feeds.get(feed.room.name) is not feed:
            return
        events = []
        for _entry_id, fields in entries:
            try:
                events.append(Event.from_line(fields[1]))
            except ValueError:
                continue
        if (not events or events[0].seq > start) and start <= feed.known_seq:
            # Trimmed from the log already: the archiver has written them to the transcript.
            upto = events[0].seq if events else feed.known_seq + 1
            older = self._read_transcript(feed.room.name, feed.room.epoch, start - 1, upto - start)
            events = [e for e in older if start <= e.seq < upto] + events
        for event in events:
            self._accept(feed, event)
        if feed.waiting and feed.next_seq + len(feed.ready) not in feed.waiting:
            expected = feed.next_seq + len(feed.ready)
            if events and events[-1].seq >= expected - 1 and len(entries) == FILL_COUNT:
                self._fill(feed)  # more to read
            elif min(feed.waiting) > expected:
                self._log.error(
                    "room {room}: events {first}-{last} are in neither the Redis log nor the"
                    " transcript; its clients are asked to join again",
                    room=feed.room.name,
                    first=expected,
                    last=min(feed.waiting) - 1,
                )
                self._reset(feed.room, "events are missing")
                return
        self._flush()

    def _fill_failed(self, failure, feed: RoomFeed) -> None:
        feed.filling = False
        self._log.warn(
            "could not read room {room}'s log from Redis ({error}); trying again",
            room=feed.room.name,
            error=str(failure.value),
        )
        self._watch_gap(feed)

    # -- acknowledgements ---------------------------------------------------------------------

    def delivered(self, name: str, epoch: str, seq: int, own: bool) -> Deferred:
        """Fires once event `seq` has been delivered on this node (or cannot be any more).

        `own`: this node posted it, so its once-only observers (webhooks) see it here."""
        feed = self._expect(name, epoch, seq, own)
        if feed is None:
            return defer.succeed(None)
        waiter: Deferred = Deferred()
        feed.acks.append((seq, waiter))
        return waiter

    def mark_own(self, name: str, epoch: str, seq: int) -> None:
        """This node posted event `seq`, and nobody here waits for it."""
        self._expect(name, epoch, seq, own=True)

    def _expect(self, name: str, epoch: str, seq: int, own: bool) -> RoomFeed | None:
        """Redis gave event `seq`: the room's feed, if it is still to be delivered here."""
        feed = self.feeds.get(name)
        if feed is None or feed.room.epoch != epoch or feed.room.committed_seq >= seq:
            return None
        if own:
            feed.own.add(seq)
        feed.known_seq = max(feed.known_seq, seq)
        self._watch_gap(feed)
        return feed

    def _watch_gap(self, feed: RoomFeed) -> None:
        """Redis has given a seq this node has not heard yet: if the channel does not bring
        it soon, read it from the log."""
        if feed.gap_call is None or not feed.gap_call.active():
            feed.gap_call = self._clock.callLater(self._gap_timeout, self._check_gap, feed)

    def _check_gap(self, feed: RoomFeed) -> None:
        feed.gap_call = None
        if self.feeds.get(feed.room.name) is not feed:
            return
        if feed.room.committed_seq < feed.known_seq:
            self._fill(feed)
            self._watch_gap(feed)

    # -- the subscription ---------------------------------------------------------------------

    def _resubscribe(self, _protocol) -> None:
        """The subscriber connection is (back) up: subscribe to every room again, then read
        from each room's log what was published while it was down."""
        channels = [*self._listeners, *self._by_channel]
        commands = [("SUBSCRIBE", channel) for channel in channels]
        commands += [("PSUBSCRIBE", pattern) for pattern in self._patterns]
        replies = self._subscriber.pipeline(commands)
        defer.DeferredList(replies, consumeErrors=True).addCallback(self._catch_up)

    def _catch_up(self, _results) -> None:
        for feed in list(self.feeds.values()):
            if feed.early is None:
                self._fill(feed)

    def _epoch_changed(self, feed: RoomFeed, epoch: str) -> None:
        self._log.warn(
            "room {room} has a new epoch in Redis ({old} -> {new}): its history there was"
            " lost; its clients are asked to join again",
            room=feed.room.name,
            old=feed.room.epoch,
            new=epoch,
        )
        self._reset(feed.room, "the room's history restarted")


class _Early:
    """Stands in a channel's place while its room's snapshot is read."""

    def __init__(self, lines: list[bytes]):
        self.lines = lines
