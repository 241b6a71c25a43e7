"""The commit pipeline: post -> sequence -> durable -> deliver -> ack -> observers.

Events are committed in batches, once per reactor turn (group commit). Everything posted during
a turn goes to the `Sequencer`, which gives each event its room's next seq and makes it durable;
only then is each event added to its room's history, sent to the room's joined sessions,
acknowledged to its sender, and shown to the observers (the support desk, metrics). A client
therefore never sees, and is never acknowledged, an event that a crash could take back.

A room's events of one batch go to each session together, in one write (one system call, in
the daemon), the sender's acks after them in the same write. They are prepared (framed, and
compressed) once for all members: an event with an `audience` (a role, events.py) goes only to
members holding that role, so a batch holding such events is prepared once per distinct
subset that members may see; a batch without (nearly every one) costs one look at each event.

`LocalSequencer` is today's sequencer: the room's own counter and its JSONL transcript, flushed
(and fsynced, with `[transcripts] fsync = batch`) once per batch. A sequencer may answer at once
or with a Deferred (a networked one will); the pipeline keeps batches in order either way.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chatd import errors, wire
from chatd.errors import ChatError
from chatd.events import Event
from chatd.metrics import Metrics
from chatd.rooms import Draft, Room
from chatd.transcript import TranscriptStore

UNSTORED = "the message could not be stored; retry later"


@dataclass(slots=True)
class Posted:
    """One draft on its way. The sequencer fills in `seq` and `event` (None for a retry that
    only needs its ack), or sets `failed`."""

    room: Room
    draft: Draft
    ack_to: Any  # the session to acknowledge, or None
    undo: Callable[[], None] | None = None  # called if the draft could not be stored
    seq: int = 0
    event: Event | None = None
    failed: bool = False
    refused: ChatError | None = None  # failed for a reason of its own, not `unavailable`


class Sequencer(Protocol):
    def sequence(self, batch: list[Posted]) -> Deferred | None:
        """Sequence and store a batch, filling in each `Posted`; a Deferred if not at once."""

    def close(self) -> None: ...


class LocalSequencer:
    """Seqs from each room's own counter, durability from its JSONL transcript.

    A failed write is logged once per cause: the first failure of a run of them says why, the
    first success after it says how many batches failed; every one is counted in
    `chatd_transcript_write_failures_total` by cause.
    """

    _log = Logger()

    def __init__(self, store: TranscriptStore, fsync: bool, metrics: Metrics):
        self._store = store
        self._fsync = fsync
        self._metrics = metrics
        self.failing: str | None = None  # the cause of the last failed write, until a success
        self._failed_batches = 0

    def sequence(self, batch: list[Posted]) -> None:
        store = self._store
        for posted in batch:
            room, draft = posted.room, posted.draft
            if posted.ack_to is not None and draft.client_id is not None:
                seq = room.seq_of_retry(draft.sender, draft.client_id, draft.ts)
                if seq is not None:
                    posted.seq = seq
                    continue
            event = posted.event = room.sequence(draft)
            posted.seq = event.seq
            store.append(room.name, event.line, event.ts)
        failed = {room for room, _error in self._flush()}
        if not failed:
            return
        abandoned: dict[Room, list[Event]] = {}
        for posted in batch:
            if posted.room.name in failed:
                posted.failed = True
                if posted.event is not None:
                    abandoned.setdefault(posted.room, []).append(posted.event)
        for room, events in abandoned.items():
            room.abandon(events)

    def _flush(self) -> list[tuple[str, OSError]]:
        started = time.perf_counter()
        failures = self._store.flush(self._fsync)
        self._metrics.transcript_write.observe(time.perf_counter() - started)
        if not failures:
            if self.failing is not None:
                self._log.info(
                    "transcripts are writable again, after {count} failed batches ({cause})",
                    count=self._failed_batches,
                    cause=self.failing,
                )
                self.failing, self._failed_batches = None, 0
            return failures
        self._failed_batches += 1
        for room, error in failures:
            cause = failure_cause(error)
            self._metrics.transcript_write_failures.labels(cause).inc()
            if cause != self.failing:
                self.failing = cause
                self._log.critical(
                    "cannot write the transcript of room {room}: {error}; the events of such a"
                    " batch are not delivered, and their senders are told to retry"
                    " (logged once until writes succeed again or the cause changes)",
                    room=room,
                    error=str(error),
                )
        return failures

    def close(self) -> None:
        self._store.close()


def failure_cause(error: OSError) -> str:
    """ENOSPC, EACCES, ...: what an operator looks up; the exception's name without one."""
    return (
        errno.errorcode.get(error.errno, type(error).__name__)
        if error.errno
        else (type(error).__name__)
    )


Observer = Callable[[Room, list[Event]], None]


class Pipeline:
    _log = Logger()

    def __init__(
        self,
        clock,
        sequencer: Sequencer,
        prepare: Callable[[list[bytes]], Any],
        metrics: Metrics,
    ):
        self._clock = clock
        self._sequencer = sequencer
        # Frames a room's members share (`outgoing.prepare_frames`, or with compression
        # `Deflater.outgoing`); ephemeral fan-out (typing, read markers) uses it too.
        self.prepare = prepare
        # Redis mode: tells the other nodes of what `tell_room` sent here (cluster.py).
        self.relay: Callable[[Room, list[bytes], str | None], None] | None = None
        self._metrics = metrics
        self.observers: list[Observer] = []
        # Observers that must see each event once in a cluster, on the node that posted it
        # (webhooks); on a single node the same as `observers`.
        self.origin_observers: list[Observer] = []
        # Called with each room whose posts of a batch are settled (its pending count fell).
        self.settled: list[Callable[[Room], None]] = []
        self._batch: list[Posted] = []
        self._turn_call = None
        self._in_flight: Deferred | None = None
        self._closed = False

    def post(self, room: Room, draft: Draft, ack_to=None, undo=None) -> None:
        """Queue a draft for the end of this reactor turn; `ack_to` is acknowledged with its
        `client_id` once it is durable, or told `unavailable` if it cannot be stored, when
        `undo` is called too."""
        if self._closed:
            self._log.debug(
                "not recording a {kind} in {room}: shut down", kind=draft.kind, room=room.name
            )
            return
        room.pending += 1
        self._batch.append(Posted(room, draft, ack_to, undo))
        if self._turn_call is None and self._in_flight is None:
            self._turn_call = self._clock.callLater(0, self._end_of_turn)

    def _end_of_turn(self) -> None:
        self._turn_call = None
        batch, self._batch = self._batch, []
        if not batch:
            return
        result = self._sequencer.sequence(batch)
        if result is None:
            self._settle(batch)
            return
        self._in_flight = result

        def settled(_ignored):
            self._in_flight = None
            self._settle(batch)
            if self._batch and self._turn_call is None:
                self._turn_call = self._clock.callLater(0, self._end_of_turn)

        result.addCallback(settled)

    def _settle(self, batch: list[Posted]) -> None:
        committed: dict[Room, list[Event]] = {}
        # A sender's acks ride in the same write as its room's events, as long as they stay
        # in the order of its requests: only while they are all for one room and follow an
        # event of their own. From its first reply that cannot ride (an error, the ack of a
        # retry, another room, a room it has left), its replies follow all deliveries.
        acks: dict[Room, dict[Any, list[bytes]]] = {}
        riding: dict[Any, Room] = {}
        replies: list[tuple[Any, bytes]] = []
        late: set = set()
        for posted in batch:
            room, event, sender = posted.room, posted.event, posted.ack_to
            room.pending -= 1
            client_id = posted.draft.client_id
            if posted.failed:
                if posted.undo is not None:
                    posted.undo()
                if sender is not None:
                    late.add(sender)
                    refused = posted.refused
                    if refused is None:
                        reply = wire.error(errors.UNAVAILABLE, UNSTORED, client_id)
                    else:
                        reply = wire.error(refused.code, refused.message, client_id)
                    replies.append((sender, reply))
                continue
            if event is not None:
                room.commit(event)
                committed.setdefault(room, []).append(event)
            if sender is None or client_id is None:
                continue
            ack = wire.ack(client_id, posted.seq)
            if (
                event is not None
                and sender not in late
                and riding.setdefault(sender, room) is room
                and sender in room.sessions
            ):
                acks.setdefault(room, {}).setdefault(sender, []).append(ack)
            else:
                late.add(sender)
                replies.append((sender, ack))
        for room, events in committed.items():
            self._deliver(room, events, acks.get(room))
        for session, reply in replies:
            if session.connection is not None:
                session.connection.send(reply)
        for room, events in committed.items():
            for observe in self.observers:
                observe(room, events)
            for observe in self.origin_observers:
                observe(room, events)
        for room in {posted.room for posted in batch}:
            for settled in self.settled:
                settled(room)

    def tell_room(
        self, room: Room, lines: list[bytes], skip_user: str | None = None, relay: bool = True
    ) -> None:
        """Ephemeral fan-out (typing, read markers): frames that are no event, to the room's
        sessions but `skip_user`'s, framed once; in Redis mode to the other nodes' too."""
        frames = self.prepare(lines)
        for session in room.sessions:
            if session.user != skip_user:
                session.connection.send_prepared(frames)
        if relay and self.relay is not None:
            self.relay(room, lines, skip_user)

    def deliver_sequenced(self, room: Room, events: list[Event], own: list[Event]) -> None:
        """Redis mode: events sequenced in Redis (by any node) reach this node's members, in
        seq order; `own` are the ones this node posted (for its origin observers)."""
        for event in events:
            room.commit(event)
        self._deliver(room, events, None)
        for observe in self.observers:
            observe(room, events)
        if own:
            for observe in self.origin_observers:
                observe(room, own)

    def _deliver(self, room: Room, events: list[Event], acks: dict[Any, list[bytes]] | None):
        for event in events:
            if event.audience is not None:
                self._deliver_by_audience(room, events, acks)
                return
        lines = [event.line for event in events]
        frames = self.prepare(lines)
        for session in room.sessions:
            own = acks.get(session) if acks else None
            if own is None:
                session.connection.send_prepared(frames)
            else:
                session.connection.send_prepared(frames, own)
        receivers = len(room.sessions)
        metrics = self._metrics
        metrics.events.inc(len(events))
        metrics.deliveries.inc(receivers * len(events))
        metrics.bytes_out.inc(receivers * sum(map(len, lines)))

    def _deliver_by_audience(
        self, room: Room, events: list[Event], acks: dict[Any, list[bytes]] | None
    ):
        """`_deliver` for a batch with restricted events (`Event.audience`): each member gets
        the events its roles let it see, prepared once per distinct set of those audiences
        that members hold (a member that may see none of them gets only its acks, if any)."""
        audiences = frozenset(event.audience for event in events if event.audience is not None)
        # held audiences -> (prepared frames, how many events, how many bytes)
        prepared: dict[frozenset[str], tuple[Any, int, int]] = {}
        deliveries = sent = 0
        for session in room.sessions:
            held = audiences & session.roles
            subset = prepared.get(held)
            if subset is None:
                lines = [event.line for event in events if event.visible_to(held)]
                subset = prepared[held] = (self.prepare(lines), len(lines), sum(map(len, lines)))
            frames, count, size = subset
            own = acks.get(session) if acks else None
            if own is not None:
                session.connection.send_prepared(frames, own)
            elif count:
                session.connection.send_prepared(frames)
            deliveries += count
            sent += size
        metrics = self._metrics
        metrics.events.inc(len(events))
        metrics.deliveries.inc(deliveries)
        metrics.bytes_out.inc(sent)

    def drained(self) -> Deferred | None:
        """What is on its way to the sequencer now (a networked one), if anything."""
        return self._in_flight

    def shutdown(self) -> None:
        """Commit what is pending and close the sequencer; later posts are not recorded."""
        if self._turn_call is not None and self._turn_call.active():
            self._turn_call.cancel()
        self._end_of_turn()
        self._closed = True
        self._sequencer.close()
