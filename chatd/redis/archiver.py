"""The archiver: Redis holds each room's recent events, the transcripts hold them for good.

In Redis mode the nodes sequence events into each room's stream (post.lua) and never write
transcripts. One archiver at a time, across all nodes, appends the streams' events to the same
`ROOM.jsonl` files the single-process daemon writes (same lines, same rotation), so operators'
tools (`tail -F | jq`, `chatd-transcript`, paging) keep working. One at a time is a lease in
Redis (lease.lua); a second writer could interleave lines.

Where a room got to is read from its transcript's own tail, not from the cursor in Redis: an
archiver that died after its write and before recording the cursor must not write those events
again. The cursor (`archived`), the trim of the stream and taking the room off `unarchived`
happen in one script (archived.lua), and only after the write is flushed (and fsynced): the
stream keeps every event that is not durable in a transcript, plus the last `keep` for joins
and resumes. A write that fails leaves the events in Redis for the next pass.

Events that should be in the stream and are not (a gap in seqs) are logged as critical and
never skipped quietly: they mean the transcripts lack events clients saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from twisted.internet import defer, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.events import Event
from chatd.pipeline import failure_cause
from chatd.redaction import TranscriptEditor, files_from, revision_of
from chatd.redis.client import RedisError, RedisLink, RedisUnavailable, Script
from chatd.redis.keys import Keys
from chatd.transcript import Recovered, TranscriptStore

LEASE = Script("lease")
ARCHIVED = Script("archived")
SCRIPTS = (LEASE, ARCHIVED)  # for the RedisLink the archiver uses (loaded on each connection)

BATCH = 256  # events read from a room's stream per step: one write (and fsync) each
INTERVAL = 0.2  # seconds between passes while no room is behind by a whole batch


class LeaseHeld(Exception):
    """Another node holds the archiver lease."""

    def __init__(self, holder: str):
        super().__init__(f"the archiver lease is held by {holder}")
        self.holder = holder


class LeaseLost(Exception):
    """The lease expired or was taken over while archiving."""


# -- what a room's stream and transcript say: pure, unit-tested --------------------------------


def parse_cursor(value: bytes | None) -> tuple[str, int] | None:
    """The `archived` key's "EPOCH SEQ", or None if there is none (or it is not that)."""
    if not value:
        return None
    epoch, _space, seq = value.decode().partition(" ")
    return (epoch, int(seq)) if seq.isdigit() else None


def archived_through(tail: Recovered | None, epoch: str) -> int:
    """The last seq of `epoch` the transcript holds: 0 if its tail is another epoch (Redis
    began a new one, which is archived from its seq 1) or there is no transcript."""
    return tail.last_seq if tail is not None and tail.epoch == epoch else 0


@dataclass
class Checked:
    """A stream's entries read as events: those to write, the seqs missing before them, and
    why reading stopped early (an entry of another epoch or not an event), if it did."""

    events: list[Event] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first, last) missing seq
    stray: str | None = None


def check_entries(entries: Sequence, epoch: str, after: int) -> Checked:
    """XRANGE's entries `[id, [b'e', line]]`, expected to be `epoch`'s events after seq `after`
    in order, checked: a seq jump is a gap (its events are written, the gap reported); an
    entry that is not an event of `epoch`, under the id `SEQ-0` of its seq, stops the reading
    there (XRANGE from `after + 1` gives ids in order, so seqs can only jump forward)."""
    checked = Checked()
    expected = after + 1
    for entry_id, fields in entries:
        name = entry_id.decode()
        try:
            event = Event.from_line(dict(zip(fields[::2], fields[1::2], strict=True))[b"e"])
        except (KeyError, ValueError) as error:
            checked.stray = f"entry {name} is not an event ({error})"
            break
        if event.epoch != epoch:
            checked.stray = f"entry {name} is of epoch {event.epoch}, not {epoch}"
            break
        if name != f"{event.seq}-0":
            checked.stray = f"entry {name} holds seq {event.seq}"
            break
        if event.seq > expected:
            checked.gaps.append((expected, event.seq - 1))
        checked.events.append(event)
        expected = event.seq + 1
    return checked


@dataclass
class Pass:
    """What one pass over the rooms with work did (`Archiver.drain` adds them up)."""

    written: int = 0  # events appended to transcripts
    rooms: set[str] = field(default_factory=set)  # rooms that got events
    behind: bool = False  # a room had a whole batch: more to read at once
    failed: dict[str, str] = field(default_factory=dict)  # room -> why it is not done
    gaps: list[str] = field(default_factory=list)  # the seqs missing from the transcripts

    def add(self, other: Pass) -> None:
        self.written += other.written
        self.rooms |= other.rooms
        self.failed.update(other.failed)
        self.gaps.extend(other.gaps)


# -- the archiver --------------------------------------------------------------------------------


class Archiver:
    """Writes every room's events from Redis to the transcripts while this node holds the lease.

    `start()` claims the lease (and renews it every third of its length) and, while it holds
    it, passes over the rooms in `unarchived` every `INTERVAL`, at once again when a room was a
    whole batch behind. A node that does not hold it retries every third of the lease, so it
    takes over within about 1.3 leases of the holder's death. `stop()` returns a Deferred that
    fires once the pass under way has stopped and the lease is released. `drain()` is
    `chatd archive --once`. Give it its own `TranscriptStore`: it closes each room's file after
    each step, so that a file rewritten meanwhile (a deletion, retention) is appended to anew.

    It is also the one process that rewrites transcripts in Redis mode: an `edit` or `delete`
    event it has just written revises the lines before it (its target, and a deleted message's
    edits) through `editor` (a `TranscriptEditor` over the same store), before its progress is
    recorded. Nodes that take the request only revise their memory (chatd/moderation.py).
    """

    _log = Logger()

    def __init__(
        self,
        clock,
        link: RedisLink,
        keys: Keys,
        store: TranscriptStore,
        node: str,
        lease: float,
        fsync: bool,
        keep: int,
        editor: TranscriptEditor | None = None,
    ):
        self._clock = clock
        self.editor = editor
        # Called with True when this node takes the lease, False when it stops holding it;
        # and with (room, last event) after each batch of a room is written (webhooks).
        self.on_holding: list[Callable[[bool], None]] = []
        self.written: list[Callable[[str, Event], None]] = []
        self._link = link
        self._keys = keys
        self._store = store
        self._node = node
        self._lease = lease
        self._fsync = fsync
        self._keep = keep
        self._running = False
        self._held = False
        self._valid_until = 0.0  # by the clock: when the lease we hold may have expired
        self._holder: str | None = None  # who holds it, as last heard (for the logs)
        self._claiming: Deferred | None = None
        self._next_claim = 0.0
        self._timer = None
        self._passing: Deferred | None = None
        self._failing: str | None = None  # why transcripts cannot be written, until they can
        self._failed_writes = 0
        self._trouble: str | None = None  # why Redis failed the archiver, until it answers
        self._reported: set[tuple] = set()  # critical findings logged once each

    # -- the lease ------------------------------------------------------------------------------

    def _set_holding(self, held: bool) -> None:
        if held != self._held:
            self._held = held
            for hook in self.on_holding:
                hook(held)

    @property
    def holding(self) -> bool:
        """Whether this node may archive now: it holds the lease and it has not run out."""
        return self._held and self._clock.seconds() < self._valid_until

    def _claim(self) -> Deferred:
        """Take or renew the lease; fires with its holder (None if unknown), never fails."""
        sent = self._clock.seconds()
        self._next_claim = sent + self._lease / 3
        claimed = self._link.run(LEASE, [self._keys.archiver], [self._node, self._ms])
        claimed.addCallbacks(self._claimed, self._unclaimed, callbackArgs=(sent,))
        self._claiming = claimed
        claimed.addBoth(self._claim_done)
        return claimed

    @property
    def _ms(self) -> int:
        return max(int(self._lease * 1000), 1)

    def _claim_done(self, holder):
        self._claiming = None
        return holder

    def _claimed(self, reply: bytes, sent: float) -> str | None:
        holder = reply.decode()
        if not self._running:
            return holder  # stopped meanwhile: the release follows
        self._redis_answers()
        if holder == self._node:
            self._valid_until = sent + self._lease
            if not self._held:
                self._set_holding(True)
                self._log.info(
                    "this process archives the rooms' events to the transcripts now"
                    " (node {node}, lease {lease}s)",
                    node=self._node,
                    lease=self._lease,
                )
        else:
            if self._held:
                self._log.warn(
                    "lost the archiver lease to {holder}: archiving stops here", holder=holder
                )
            elif holder != self._holder:
                self._log.info(
                    "{holder} archives the transcripts; this process stands by", holder=holder
                )
            self._set_holding(False)
        self._holder = holder
        return holder

    def _unclaimed(self, failure: Failure) -> None:
        failure.trap(RedisUnavailable, RedisError)
        self._redis_fails(failure.value)
        if self._held and self._clock.seconds() >= self._valid_until:
            self._set_holding(False)
            self._log.warn(
                "could not renew the archiver lease within {lease}s ({error}): archiving"
                " stops until it is taken again",
                lease=self._lease,
                error=str(failure.value),
            )
        return None

    def _release(self) -> Deferred:
        if not self._held:
            return defer.succeed(None)
        self._set_holding(False)
        released = self._link.run(LEASE, [self._keys.archiver], [self._node, "0"])

        def done(_holder):
            self._log.info("released the archiver lease")

        def failed(failure: Failure):
            failure.trap(RedisUnavailable, RedisError)
            self._log.warn(
                "could not release the archiver lease ({error}); it expires in {lease}s",
                error=str(failure.value),
                lease=self._lease,
            )

        return released.addCallbacks(done, failed)

    # -- running in the daemon ------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._tick()

    def stop(self) -> Deferred:
        """Stop archiving: the pass under way stops before its next write; then the lease is
        released. Fires when both are done."""
        self._running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        passing = self._passing if self._passing is not None else defer.succeed(None)
        return passing.addCallback(lambda _ignored: self._release())

    def _tick(self) -> None:
        self._timer = None
        if not self._running:
            return
        if self._claiming is None and self._clock.seconds() >= self._next_claim:
            was_holding = self._held
            self._claim().addCallback(
                lambda _holder: self._kick() if self._held and not was_holding else None
            )
        if self.holding and self._passing is None:
            self._passing = self._pass()
            self._passing.addBoth(self._passed)
        if self._running and self._timer is None:
            self._timer = self._clock.callLater(INTERVAL, self._tick)

    def _kick(self) -> None:
        """Pass again at once (the lease was just taken, or a room is behind)."""
        if not self._running:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._clock.callLater(0, self._tick)

    def _passed(self, outcome: Pass | Failure) -> None:
        self._passing = None
        if isinstance(outcome, Failure):
            if not outcome.check(RedisUnavailable, RedisError):
                self._log.failure("the archiver's pass failed", outcome)
                return
            self._redis_fails(outcome.value)
            return
        self._redis_answers()
        if outcome.behind:
            self._kick()

    def _redis_fails(self, error: Exception) -> None:
        """Log a Redis failure once until Redis answers again (a pass retries every 0.2 s)."""
        if str(error) != self._trouble:
            self._trouble = str(error)
            self._log.warn(
                "archiving paused: {error}; the events stay in Redis, retrying"
                " (logged once until Redis answers again)",
                error=self._trouble,
            )

    def _redis_answers(self) -> None:
        if self._trouble is not None:
            self._log.info("Redis answers the archiver again, after: {error}", error=self._trouble)
            self._trouble = None

    # -- chatd archive --once -------------------------------------------------------------------

    @inlineCallbacks
    def drain(self):
        """Take the lease, archive every room until none is a batch behind, release the lease.

        Fires with the `Pass` totals; fails with `LeaseHeld` if another node holds the lease,
        `LeaseLost` if it is lost meanwhile, `RedisUnavailable` / `RedisError` from Redis.
        """
        self._running = True
        renewing = task.LoopingCall(self._claim)
        renewing.clock = self._clock
        try:
            sent = self._clock.seconds()
            reply = yield self._link.run(LEASE, [self._keys.archiver], [self._node, self._ms])
            holder = self._claimed(reply, sent)
            if not self._held:
                raise LeaseHeld(holder)
            renewing.start(self._lease / 3, now=False)
            total = Pass()
            while True:
                outcome = yield self._pass()
                total.add(outcome)
                if not self.holding:
                    raise LeaseLost(f"lost the archiver lease (held by {self._holder})")
                if not outcome.behind:
                    return total
        finally:
            if renewing.running:
                renewing.stop()
            self._running = False
            yield self._release()

    # -- a pass ---------------------------------------------------------------------------------

    @inlineCallbacks
    def _pass(self):
        outcome = Pass()
        rooms = yield self._link.execute("SMEMBERS", self._keys.unarchived)
        for room in sorted(name.decode() for name in rooms):
            if not (self._running and self.holding):
                break
            try:
                yield self._archive(room, outcome)
            finally:
                self._store.release(room)
        return outcome

    @inlineCallbacks
    def _archive(self, room: str, outcome: Pass):
        """One step of one room: up to `BATCH` events written, then recorded."""
        keys = self._keys
        try:
            self._store.path_of(room)
        except ValueError:
            self._loudly(
                ("name", room),
                "{room!r} in {key} is not a room name: its events are not archived",
                room=room,
                key=keys.unarchived,
            )
            outcome.failed[room] = "not a room name"
            return
        try:
            tail = self._store.recover(room, keep=0)
        except OSError as error:
            self._cannot_write(room, error, outcome)
            return
        after = tail.last_seq if tail is not None else 0
        epoch, redis_seq, cursor, entries = yield defer.gatherResults(
            self._link.pipeline(
                [
                    ("HGET", keys.meta(room), "epoch"),
                    ("HGET", keys.meta(room), "seq"),
                    ("GET", keys.archived(room)),
                    # Read after the seq: every event up to it is in the stream by then.
                    ("XRANGE", keys.log(room), f"{after + 1}-0", "+", "COUNT", BATCH),
                ]
            ),
            consumeErrors=True,
        ).addErrback(_first_error)
        if epoch is None:
            yield self._record(room, "", 0)
            return
        epoch, redis_seq = epoch.decode(), int(redis_seq)
        if archived_through(tail, epoch) != after:
            after = 0  # a new epoch in Redis: from its seq 1, after the old one's lines
            entries = yield self._link.execute("XRANGE", keys.log(room), "-", "+", "COUNT", BATCH)
            if ("epoch", room, epoch) not in self._reported:
                self._reported.add(("epoch", room, epoch))
                self._log.info(
                    "room {room} has a new epoch {epoch} in Redis: its events follow those of"
                    " epoch {old} in the transcript",
                    room=room,
                    epoch=epoch,
                    old=tail.epoch,
                )
        self._check_positions(room, epoch, after, redis_seq, parse_cursor(cursor))
        checked = check_entries(entries, epoch, after)
        for first, last in checked.gaps:
            self._gap(room, epoch, first, last, outcome)
        if not checked.events and not checked.stray and redis_seq > after:
            # The stream lacks events its seq says exist: trimmed by someone, or lost.
            self._gap(room, epoch, after + 1, redis_seq, outcome)
            outcome.failed[room] = f"events {after + 1}-{redis_seq} are missing from Redis"
            return
        if checked.events:
            if not (self._running and self.holding):
                return
            for event in checked.events:
                self._store.append(room, event.line, event.ts)
            for _room, error in self._store.flush(self._fsync):
                self._cannot_write(room, error, outcome)
                return
            if self._failing is not None:
                self._log.info(
                    "transcripts are writable again, after {count} failed writes ({cause})",
                    count=self._failed_writes,
                    cause=self._failing,
                )
                self._failing, self._failed_writes = None, 0
            after = checked.events[-1].seq
            outcome.written += len(checked.events)
            outcome.rooms.add(room)
            for event in checked.events:
                yield self._revise(room, event)
            for hook in self.written:
                hook(room, checked.events[-1])
        if checked.stray:
            self._loudly(
                ("stray", room, checked.stray),
                "room {room}: {stray} in {key}; archiving stops before it",
                room=room,
                stray=checked.stray,
                key=keys.log(room),
            )
            outcome.failed[room] = checked.stray
        yield self._record(room, epoch, after)
        if len(entries) == BATCH and not checked.stray:
            outcome.behind = True

    @inlineCallbacks
    def _record(self, room: str, epoch: str, seq: int):
        keys = self._keys
        done = yield self._link.run(
            ARCHIVED,
            [keys.archived(room), keys.log(room), keys.meta(room), keys.unarchived, keys.archiver],
            [self._node, epoch, seq, self._keep, room],
        )
        if done == -1 and self._held:
            self._set_holding(False)
            self._log.warn("lost the archiver lease: archiving stops here")

    def _check_positions(self, room, epoch, after, redis_seq, cursor) -> None:
        """Say loudly when the transcript and Redis disagree about where the room is."""
        if after > redis_seq:
            self._loudly(
                ("ahead", room, epoch, after),
                "the transcript of room {room} holds seq {seq} of epoch {epoch} but Redis is at"
                " seq {redis_seq}: Redis lost events it had acknowledged (a failover, a restore?)"
                " and reuses their seqs; those events are not archived",
                room=room,
                seq=after,
                epoch=epoch,
                redis_seq=redis_seq,
            )
        if cursor is not None and cursor[0] == epoch and cursor[1] > after:
            self._loudly(
                ("behind", room, epoch, cursor[1]),
                "the transcript of room {room} ends at seq {seq} of epoch {epoch}, but Redis"
                " records seq {archived} as archived: is [transcripts] directory the one the"
                " archiver wrote before? Archiving goes on from the transcript's end",
                room=room,
                seq=after,
                epoch=epoch,
                archived=cursor[1],
            )

    def _gap(self, room: str, epoch: str, first: int, last: int, outcome: Pass) -> None:
        outcome.gaps.append(f"{room}: seq {first}-{last} of epoch {epoch}")
        self._loudly(
            ("gap", room, epoch, first, last),
            "room {room}: events {first}-{last} of epoch {epoch} are not in Redis and will"
            " never be in the transcript (trimmed before they were archived: another"
            " transcript directory, or lost by Redis)",
            room=room,
            first=first,
            last=last,
            epoch=epoch,
        )

    def _loudly(self, key: tuple, message: str, **fields) -> None:
        """A critical finding, logged once per process: a pass repeats every 0.2 s."""
        if key not in self._reported:
            self._reported.add(key)
            self._log.critical(message, **fields)

    @inlineCallbacks
    def _revise(self, room: str, event: Event):
        """An edit or delete just written: revise the room's transcript lines it names."""
        revision = revision_of(event) if self.editor is not None else None
        if revision is None:
            return
        revise, until = revision
        target = event.record["target"]
        directory = self._store.directory
        try:
            outcome = yield self.editor.rewrite(
                room, lambda: files_from(directory, room, target, until), revise
            )
        except Exception as error:
            self._log.critical(
                "could not apply the {kind} of message {target} (seq {seq}) to room {room}'s"
                " transcript: {error}; its old text stays there until it is erased",
                kind=event.kind,
                target=target,
                seq=event.seq,
                room=room,
                error=str(error),
            )
            return
        self._log.info(
            "room {room}: the {kind} of message {target} revised {changed} line(s)",
            room=room,
            kind=event.kind,
            target=target,
            changed=outcome.changed,
        )

    def _cannot_write(self, room: str, error: OSError, outcome: Pass) -> None:
        cause = failure_cause(error)
        outcome.failed[room] = f"{cause}: {error}"
        self._failed_writes += 1
        if cause != self._failing:
            self._failing = cause
            self._log.critical(
                "cannot write the transcript of room {room}: {error}; its events stay in Redis"
                " and are archived once writes succeed (logged once until they do or the"
                " cause changes)",
                room=room,
                error=str(error),
            )


def _first_error(failure: Failure):
    """gatherResults wraps the first failure: unwrap it, so callers see RedisUnavailable."""
    failure.trap(defer.FirstError)
    return failure.value.subFailure
