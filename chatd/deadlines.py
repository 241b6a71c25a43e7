"""Deadlines of one fixed length, kept in the order they were set: one timer serves them all.

Every connection has two: its opening handshake must be done within `[limits]
handshake_timeout` of its accept, and its hello must come within `[auth] hello_timeout` of its
open. With a `callLater` each, that was a DelayedCall, a heap push and, when the deadline was
met (nearly always), a cancelled call the reactor's heap carried until it compacted: 5 % of a
ws handshake's CPU for the two. Here setting or meeting a deadline is a dict operation. Since
each queue's deadlines all run the same length, the one set first is due first.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable


class Deadlines:
    """Items that must each be done within `timeout` seconds of being `set`; `overdue(item)` is
    called for those that are not. An item is set once until it is met or overdue."""

    def __init__(self, clock, timeout: float, overdue: Callable[[Hashable], object]):
        self.clock = clock
        self.timeout = timeout
        self._overdue = overdue
        self._since: dict[Hashable, float] = {}  # item -> when it was set, oldest first
        self._call = None

    def __len__(self) -> int:
        return len(self._since)

    def __contains__(self, item: Hashable) -> bool:
        return item in self._since

    def set(self, item: Hashable) -> None:
        self._since[item] = self.clock.seconds()
        if self._call is None:
            self._call = self.clock.callLater(self.timeout, self._expire)

    def meet(self, item: Hashable) -> float:
        """Forget `item`'s deadline; the seconds that were left of it (0 for an item not set)."""
        since = self._since.pop(item, None)
        if since is None:
            return 0.0
        return since + self.timeout - self.clock.seconds()

    def _expire(self) -> None:
        self._call = None
        now = self.clock.seconds()
        overdue = []
        for item, since in self._since.items():
            if since + self.timeout > now:
                break
            overdue.append(item)
        for item in overdue:
            del self._since[item]
        for item in overdue:
            self._overdue(item)
        if self._since and self._call is None:
            oldest = next(iter(self._since.values()))
            self._call = self.clock.callLater(oldest + self.timeout - now, self._expire)
