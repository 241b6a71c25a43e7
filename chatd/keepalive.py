"""Keepalive for every connection on one timer: ping the silent, drop the dead.

Autobahn's auto-ping gives each connection a ping timer and a pong-deadline timer, with a
random payload per ping. Since crossbar #722 (30k clients pinged every 60 s took 60% of a
core) txaio batches those timers into one reactor call per second, but every connection still
creates, fires and cancels its own timer objects on every ping. Here one tick per second walks
a timing wheel: each connection sits in the slot of the second when it next needs a look, and
is looked at only then. If it was heard from since, it moves to the slot of
`last_heard + interval`; traffic itself costs nothing but a timestamp. Bench (k), 10,000 idle
connections pinged every 5 s: 25-29 µs of server CPU per ping, against 66-89 for Autobahn's
auto-ping (BENCHMARKS.md).

Any frame from the peer is a sign of life, a pong or anything else.
"""

from __future__ import annotations

import math
from typing import Protocol


class Watched(Protocol):
    """A connection as keepalive sees it."""

    last_heard: float  # when the peer last sent anything (the connection keeps it current)

    def send_ping(self) -> None: ...

    def drop_silent(self) -> None: ...


class Keepalive:
    def __init__(self, clock, interval: float, timeout: float, tick: float = 1.0):
        self._clock = clock
        self._interval = interval
        self._timeout = timeout
        self._tick_length = tick
        self._slots: dict[int, set[Watched]] = {}  # slot number -> connections due then
        self._slot_of: dict[Watched, int] = {}
        self._pinged_at: dict[Watched, float] = {}  # unanswered pings
        self._call = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def watch(self, connection: Watched) -> None:
        self._place(connection, connection.last_heard + self._interval)
        self._keep_ticking()

    def forget(self, connection: Watched) -> None:
        slot = self._slot_of.pop(connection, None)
        if slot is not None:
            self._slots[slot].discard(connection)
        self._pinged_at.pop(connection, None)

    def _place(self, connection: Watched, due: float) -> None:
        slot = math.ceil(due / self._tick_length)
        self._slots.setdefault(slot, set()).add(connection)
        self._slot_of[connection] = slot

    def _keep_ticking(self) -> None:
        """Tick on every whole tick while anything is watched (one call a second: cheaper
        than keeping the timer exactly on the next occupied slot)."""
        if self._call is None and self._slot_of:
            now = self._clock.seconds()
            next_tick = (math.floor(now / self._tick_length) + 1) * self._tick_length
            self._call = self._clock.callLater(next_tick - now, self._tick)

    def _tick(self) -> None:
        self._call = None
        now = self._clock.seconds()
        current = math.floor(now / self._tick_length)
        for slot in sorted(slot for slot in self._slots if slot <= current):
            for connection in self._slots.pop(slot):
                del self._slot_of[connection]
                due = self._look_at(connection, now)
                if due is not None:
                    self._place(connection, due)
        self._keep_ticking()

    def _look_at(self, connection: Watched, now: float) -> float | None:
        """Ping or drop the connection if it is due; return when to look at it next."""
        pinged_at = self._pinged_at.get(connection)
        if pinged_at is not None:
            if connection.last_heard < pinged_at:
                if now >= pinged_at + self._timeout:
                    del self._pinged_at[connection]
                    connection.drop_silent()
                    return None
                return pinged_at + self._timeout
            del self._pinged_at[connection]  # answered
        if now >= connection.last_heard + self._interval:
            self._pinged_at[connection] = now
            connection.send_ping()
            return now + self._timeout
        return connection.last_heard + self._interval
