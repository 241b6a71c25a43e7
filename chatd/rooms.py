"""Room state: members, sequence numbers, the recent-history ring and retry de-duplication.

Pure logic: no I/O and no clock of its own; times are passed in as POSIX seconds. A room hands
out sequence numbers when an event is created (`new_message`, `new_presence`) but only puts the
event into its history when the broadcaster `commit`s it, after the transcript line is on disk;
`seq` in a `joined` reply is therefore always the latest *committed* event.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from chatd.wire import Since, encode


@dataclass(frozen=True, slots=True)
class Event:
    """One sequenced room event and its JSON encoding (a transcript line and a wire frame)."""

    epoch: str
    seq: int
    ts: float
    sender: str | None
    client_id: str | None
    line: bytes

    @classmethod
    def from_line(cls, line: bytes) -> Event:
        """Rebuild an event from a transcript line; raises ValueError if it is not one."""
        try:
            record = json.loads(line)
            seq, epoch = record["seq"], record["epoch"]
            ts = datetime.fromisoformat(record["ts"]).timestamp()
        except (KeyError, TypeError, RecursionError) as error:
            raise ValueError(f"not a transcript event ({error!r})") from None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError("seq is not a positive integer")
        if not isinstance(epoch, str):
            raise ValueError("epoch is not a string")
        sender = record.get("from", record.get("user"))
        client_id = record.get("id")
        return cls(epoch, seq, ts, sender, client_id if isinstance(client_id, str) else None, line)


def format_ts(ts: float) -> str:
    """UTC ISO-8601 with milliseconds and a Z, as `jq` and `date -d` read it."""
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


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
        self.members: dict[str, Any] = {}
        self.retry_window = retry_window
        self._recent: deque[Event] = deque(recent, maxlen=memory_events)
        self.last_seq = max(last_seq, self._recent[-1].seq if self._recent else 0)
        self.committed_seq = self.last_seq
        # Every committed event with seq >= floor is in the ring.
        self._floor = self._recent[0].seq if self._recent else self.last_seq + 1
        # (sender, client id) -> (seq, ts), oldest first, for acknowledging retries.
        self._sent_ids: dict[tuple[str, str], tuple[int, float]] = {}
        for event in self._recent:
            if event.sender is not None and event.client_id is not None:
                self._sent_ids[(event.sender, event.client_id)] = (event.seq, event.ts)

    # -- events -------------------------------------------------------------------------------

    def _new_event(self, ts: float, fields: dict, sender: str, client_id: str | None) -> Event:
        self.last_seq += 1
        record = {
            "type": fields.pop("type"),
            "room": self.name,
            "epoch": self.epoch,
            "seq": self.last_seq,
            "ts": format_ts(ts),
            **fields,
        }
        return Event(self.epoch, self.last_seq, ts, sender, client_id, encode(record))

    def new_message(self, sender: str, client_id: str, text: str, ts: float) -> Event:
        fields = {"type": "message", "from": sender, "id": client_id, "text": text}
        event = self._new_event(ts, fields, sender, client_id)
        self._sent_ids[(sender, client_id)] = (event.seq, ts)
        return event

    def new_presence(self, user: str, change: str, ts: float) -> Event:
        return self._new_event(ts, {"type": "presence", "user": user, "event": change}, user, None)

    def commit(self, event: Event) -> None:
        """The event's transcript line is on disk: make it part of the room's history."""
        if len(self._recent) == self._recent.maxlen:
            self._floor = self._recent[0].seq + 1
        self._recent.append(event)
        self.committed_seq = event.seq

    def abandon(self, event: Event) -> None:
        """The event could not be stored: forget its client id so that a retry is posted anew."""
        if event.sender is not None and event.client_id is not None:
            self._sent_ids.pop((event.sender, event.client_id), None)

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

    def replay(self, since: Since | None, latest: int) -> tuple[list[bytes], bool]:
        """History for a joining client: exactly what it missed, or the latest events."""
        if (
            since is not None
            and since.epoch == self.epoch
            and self._floor <= since.seq + 1
            and since.seq <= self.committed_seq
        ):
            missed = [event.line for event in reversed(self._recent) if event.seq > since.seq]
            missed.reverse()
            return missed, True
        return self.latest(latest), False

    def latest(self, count: int) -> list[bytes]:
        if count <= 0:
            return []
        start = max(len(self._recent) - count, 0)
        return [event.line for event in islice(self._recent, start, None)]

    def before(self, before: int, limit: int) -> list[bytes] | None:
        """Up to `limit` committed events with seq < `before`, oldest first.

        None when the ring cannot tell (older events may exist only in the transcript).
        """
        newest_wanted = min(before - 1, self.committed_seq)
        oldest_wanted = max(newest_wanted - limit + 1, 1)
        if oldest_wanted < self._floor and self._floor > 1:
            return None
        found = [event.line for event in reversed(self._recent) if event.seq < before]
        return list(reversed(found[:limit]))
