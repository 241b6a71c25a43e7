"""A room event: its JSON line (a wire frame and a transcript line at once) and what is read
from it. `Event.from_line` is the one parser of a transcript line; everything that reads
transcripts (recovery, paging, the support desk, `chatd-transcript`) goes through it.

An event may have an `audience`: a role. Only sessions holding that role receive it, live or
in any history (`Event.visible_to`); events without one (nearly all) are for every member.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def format_ts(ts: float) -> str:
    """UTC ISO-8601 with milliseconds and a Z, as `jq` and `date -d` read it."""
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def parse_ts(text: str) -> float:
    """POSIX seconds from a `ts` field; raises ValueError if it is not a time."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Event:
    """One sequenced room event.

    Only the line is kept, not its decoded fields: a room holds up to `[history]
    memory_events` of these, and a dict beside each line was the bulk of the heap (and of the
    garbage collector's work) in the many-rooms bench. `record` decodes it for the readers
    that need fields (the support desk, moderation), which are not on the fan-out path.
    `audience` is read out of the line once, when the event is made, for the same reason:
    fan-out and every history path ask each event whether a session may see it.
    """

    epoch: str
    seq: int
    ts: float
    kind: str
    sender: str | None
    client_id: str | None
    line: bytes
    audience: str | None = None  # the role an event is restricted to; None: every member

    def visible_to(self, roles: frozenset[str]) -> bool:
        """May a session with these roles receive this event (live or in any history)?"""
        return self.audience is None or self.audience in roles

    @property
    def record(self) -> dict[str, Any]:
        return json.loads(self.line)

    @classmethod
    def from_line(cls, line: bytes) -> Event:
        """Rebuild an event from a transcript line; raises ValueError if it is not one."""
        try:
            record = json.loads(line)
        except RecursionError:
            raise ValueError("nested too deeply") from None
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        try:
            seq, epoch, kind = record["seq"], record["epoch"], record["type"]
            ts = parse_ts(record["ts"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a transcript event ({error!r})") from None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError("seq is not a positive integer")
        if not isinstance(epoch, str) or not isinstance(kind, str):
            raise ValueError("epoch or type is not a string")
        sender = record.get("from", record.get("user"))
        client_id = record.get("id")
        audience = record.get("audience")
        return cls(
            epoch,
            seq,
            ts,
            kind,
            sender if isinstance(sender, str) else None,
            client_id if isinstance(client_id, str) else None,
            line,
            audience if isinstance(audience, str) else None,
        )
