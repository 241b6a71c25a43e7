"""One room's state: who is in it, its sequence numbers, recent history and retry ids.

Pure logic: no I/O and no clock of its own; times are passed in as POSIX seconds. An event
starts as a `Draft` (what happened, without a place in the history); a sequencer gives it the
room's next seq (`sequence`), and only once its transcript line is durable does the pipeline
`commit` it into the history. `seq` in a `joined` reply is therefore always the latest
*committed* event.

The history ring holds each event as an exact tuple of its fields (`_row`), not as an `Event`:
a tuple of strings, numbers and bytes is untracked by the garbage collector at its first
collection, while every `Event` (a class instance) stays tracked for as long as it lives. With
1,000 rooms of up to `[history] memory_events` events, the `Event`s grew towards a million
objects for each full collection to walk (issue 16: 24-210 ms pauses as they grew). Readers
still get `Event`s: `find` and `events` rebuild them, off the fan-out path.

Membership is counted per user: a user's first session in the room makes it a member (a
`join` presence event), the last one to go ends it (`leave`). Fan-out goes to every joined
session.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from chatd.events import Event, format_ts
from chatd.wire import Since, encode


@dataclass(slots=True)
class Draft:
    """An event before it has a seq: its type, its own fields, who caused it, and the role it
    is restricted to (`audience`; None: every member)."""

    kind: str
    fields: dict[str, Any]
    sender: str | None
    ts: float
    client_id: str | None = None
    audience: str | None = None
    # An `assignment` that holds only while the conversation is unassigned or already the
    # assignee's: a claim. One process checks that in memory; Redis mode where seqs are given.
    claim: bool = False


def message_draft(sender: str, name: str, client_id: str, text: str, ts: float) -> Draft:
    fields = {"from": sender, "name": name, "id": client_id, "text": text}
    return Draft("message", fields, sender, ts, client_id)


def presence_draft(user: str, name: str, change: str, ts: float) -> Draft:
    return Draft("presence", {"user": user, "name": name, "event": change}, user, ts)


# An event in the ring: Event's fields in its order (epoch, seq, ts, kind, sender, client_id,
# line, audience), so that `Event(*row)` rebuilds it.
Row = tuple[str, int, float, str, str | None, str | None, bytes, str | None]
SEQ, TS, KIND, SENDER, CLIENT_ID, LINE, AUDIENCE = 1, 2, 3, 4, 5, 6, 7


def _row(event: Event) -> Row:
    return (
        event.epoch,
        event.seq,
        event.ts,
        event.kind,
        event.sender,
        event.client_id,
        event.line,
        event.audience,
    )


def _visible(row: Row, roles: frozenset[str] | None) -> bool:
    """`Event.visible_to` for a row; None: every event (the server's own readers)."""
    return roles is None or row[AUDIENCE] is None or row[AUDIENCE] in roles


@dataclass(slots=True)
class Member:
    """A user in a room: the display name others see, and the user's sessions joined here."""

    name: str
    sessions: list[Any] = field(default_factory=list)


class Room:
    """A room's members and history; `epoch` names the history its `seq` numbers count in."""

    def __init__(
        self,
        name: str,
        epoch: str,
        *,
        memory_events: int,
        retry_window: float,
        recent: list[Event] | tuple[Event, ...] = (),
        last_seq: int = 0,
    ):
        self.name = name
        self.epoch = epoch
        self.members: dict[str, Member] = {}  # by user id
        # Redis mode: members present only through other nodes, user id -> display name.
        self.others: dict[str, str] = {}
        self.sessions: dict[Any, None] = {}  # every joined session, in join order (fan-out)
        self.retry_window = retry_window
        self.pending = 0  # events posted and not yet committed or abandoned
        # Kept in memory even with nobody in it (Redis mode: a conversation of the desk's,
        # which every node follows).
        self.kept = False
        self._recent: deque[Row] = deque(map(_row, recent), maxlen=memory_events)
        self.last_seq = max(last_seq, self._recent[-1][SEQ] if self._recent else 0)
        self.committed_seq = self.last_seq
        # Every committed event with seq >= floor is in the ring.
        self._floor = self._recent[0][SEQ] if self._recent else self.last_seq + 1
        # Whether anything but presence was ever said: a room that only saw people come and go
        # leaves no transcript behind when it is unloaded. Unknown history counts as said.
        self.said_anything = self._floor > 1 or any(r[KIND] != "presence" for r in self._recent)
        # (sender, client id) -> (seq, ts), oldest first, for acknowledging retries: tuples of
        # strings and numbers, untracked by the garbage collector like the ring's rows.
        self._sent_ids: dict[tuple[str, str], tuple[int, float]] = {}
        for row in self._recent:
            if row[SENDER] is not None and row[CLIENT_ID] is not None:
                self._sent_ids[(row[SENDER], row[CLIENT_ID])] = (row[SEQ], row[TS])

    # -- members ------------------------------------------------------------------------------

    def add(self, session) -> bool:
        """Join a session; True if it is its user's first here (the user becomes a member)."""
        if session in self.sessions:
            return False
        self.sessions[session] = None
        member = self.members.get(session.user)
        if member is None:
            member = self.members[session.user] = Member(session.name)
            member.sessions.append(session)
            return True
        member.sessions.append(session)
        return False

    def remove(self, session) -> bool:
        """Part a session; True if it was its user's last here (the user is no member now)."""
        if self.sessions.pop(session, False) is False:
            return False
        member = self.members[session.user]
        member.sessions.remove(session)
        if member.sessions:
            return False
        del self.members[session.user]
        return True

    def names(self) -> dict[str, str]:
        """Display names of the members, by user id."""
        names = {user: member.name for user, member in self.members.items()}
        if self.others:
            return {**self.others, **names}
        return names

    @property
    def idle(self) -> bool:
        """Nobody in it and nothing on its way to the transcript: it may leave memory."""
        return not self.sessions and self.pending == 0 and not self.kept

    # -- events -------------------------------------------------------------------------------

    def sequence(self, draft: Draft) -> Event:
        """Give a draft the room's next seq (the local sequencer's job)."""
        self.last_seq += 1
        record = {
            "type": draft.kind,
            "room": self.name,
            "epoch": self.epoch,
            "seq": self.last_seq,
            "ts": format_ts(draft.ts),
            **draft.fields,
        }
        if draft.audience is not None:
            record["audience"] = draft.audience
        event = Event(
            self.epoch,
            self.last_seq,
            draft.ts,
            draft.kind,
            draft.sender,
            draft.client_id,
            encode(record),
            draft.audience,
        )
        if draft.sender is not None and draft.client_id is not None:
            self._sent_ids[(draft.sender, draft.client_id)] = (event.seq, draft.ts)
        return event

    def commit(self, event: Event) -> None:
        """The event's transcript line is durable: make it part of the room's history."""
        if len(self._recent) == self._recent.maxlen:
            self._floor = self._recent[0][SEQ] + 1
        self._recent.append(_row(event))
        self.committed_seq = event.seq
        if event.kind != "presence":
            self.said_anything = True

    def abandon(self, events: list[Event]) -> None:
        """These events could not be stored: their seqs are given out again, and their client
        ids forgotten so that a retry is posted anew."""
        for event in events:
            if event.sender is not None and event.client_id is not None:
                self._sent_ids.pop((event.sender, event.client_id), None)
        self.last_seq = self.committed_seq

    def _index(self, seq: int) -> int | None:
        """Where the committed event `seq` is in the ring, if it holds it."""
        if not self._recent or seq < self._recent[0][SEQ] or seq > self.committed_seq:
            return None
        index = seq - self._recent[0][SEQ]
        if index < len(self._recent) and self._recent[index][SEQ] == seq:
            return index
        return next((i for i, row in enumerate(self._recent) if row[SEQ] == seq), None)

    def find(self, seq: int) -> Event | None:
        """The committed event `seq` if the ring holds it."""
        index = self._index(seq)
        return None if index is None else Event(*self._recent[index])

    def revise(self, event: Event) -> bool:
        """Replace the committed event with `event`'s seq by `event` (its current state: an
        edited or redacted message); False if the ring does not hold it."""
        index = self._index(event.seq)
        if index is None:
            return False
        self._recent[index] = _row(event)
        return True

    def forget_before(self, ts: float) -> int:
        """Drop the events older than `ts` from the ring (retention); returns how many."""
        dropped = 0
        while self._recent and self._recent[0][TS] < ts:
            self._floor = self._recent.popleft()[SEQ] + 1
            dropped += 1
        return dropped

    def events(self) -> list[Event]:
        """The committed events the ring holds, oldest first."""
        return [Event(*row) for row in self._recent]

    # -- retries ------------------------------------------------------------------------------

    def seq_of_retry(self, sender: str, client_id: str, now: float) -> int | None:
        """The seq already given to this sender's message `client_id`, if within the window."""
        horizon = now - self.retry_window
        while self._sent_ids:
            key = next(iter(self._sent_ids))
            if self._sent_ids[key][1] >= horizon:
                break
            del self._sent_ids[key]
        found = self._sent_ids.get((sender, client_id))
        return None if found is None else found[0]

    # -- history ------------------------------------------------------------------------------

    def replay(
        self, since: Since | None, latest: int, roles: frozenset[str] | None = None
    ) -> tuple[list[bytes], bool]:
        """History for a joining client: exactly what it missed, or the latest events.

        With `roles`, only the events a session with these roles may see (`Event.visible_to`;
        None: every event, for the server's own readers). The events it may not see leave gaps
        in the seqs, and a resume across them is still recovered.
        """
        if (
            since is not None
            and since.epoch == self.epoch
            and self._floor <= since.seq + 1
            and since.seq <= self.committed_seq
        ):
            missed = []
            for row in reversed(self._recent):
                if row[SEQ] <= since.seq:
                    break
                if _visible(row, roles):
                    missed.append(row[LINE])
            missed.reverse()
            return missed, True
        return self.latest(latest, roles), False

    def latest(self, count: int, roles: frozenset[str] | None = None) -> list[bytes]:
        """The latest `count` events (that a session with `roles` may see), oldest first."""
        found: list[bytes] = []
        if count <= 0:
            return found
        for row in reversed(self._recent):
            if _visible(row, roles):
                found.append(row[LINE])
                if len(found) == count:
                    break
        found.reverse()
        return found

    def before(
        self, before: int, limit: int, roles: frozenset[str] | None = None
    ) -> list[bytes] | None:
        """Up to `limit` committed events with seq < `before` (that a session with `roles` may
        see), oldest first.

        None when the ring cannot tell (older events may exist only in the transcript).
        """
        found: list[bytes] = []
        for row in reversed(self._recent):
            if row[SEQ] < before and _visible(row, roles):
                found.append(row[LINE])
                if len(found) == limit:
                    break
        if len(found) < limit and self._floor > 1:
            return None
        found.reverse()
        return found
