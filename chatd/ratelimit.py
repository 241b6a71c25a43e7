"""Token buckets, and the frame budgets of one connection built from them."""

from __future__ import annotations

from chatd.config import LimitsConfig

# Frames that cost the server little and that a client may rightly send in quick runs
# (lookups, a token refresh, read markers): they have a budget of their own, and going over it
# never closes the connection.
CHEAP_FRAMES = frozenset({"who", "queue", "refresh", "read"})
# Typing indicators: a budget of their own again, so that a client that sends one per
# keystroke neither spends the budget of its lookups nor floods the room. Over it they are
# dropped without a reply: the indicator is advisory and ends by itself.
TYPING_FRAMES = frozenset({"typing"})


class TokenBucket:
    """Bursts up to `burst` frames, `rate` frames per second sustained."""

    __slots__ = ("_tokens", "_updated", "burst", "rate")  # four per connection

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means over the limit."""
        elapsed = max(now - self._updated, 0.0)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        """Return a token taken for a frame that was then refused on other grounds."""
        self._tokens = min(float(self.burst), self._tokens + 1.0)

    def full(self, now: float) -> bool:
        """True if the bucket has refilled to its burst (it may then be forgotten)."""
        return self._tokens + max(now - self._updated, 0.0) * self.rate >= self.burst


class FrameBudget:
    """One connection's budgets: every frame before it is read (so that unreadable frames
    cost something too), then costly frames (`say`, `join`, ...), cheap ones and typing
    indicators apart.

    Costly frames over budget are strikes: `flood_close_after` of them in a row close the
    connection. Cheap frames and typing indicators over budget are only refused.
    """

    __slots__ = ("_all", "_cheap", "_costly", "_limits", "_strikes", "_typing")

    def __init__(self, limits: LimitsConfig, now: float):
        self._limits = limits
        self._all = TokenBucket(
            limits.messages_per_second + limits.cheap_per_second + limits.typing_per_second,
            limits.message_burst + limits.cheap_burst + limits.typing_burst,
            now,
        )
        self._costly = TokenBucket(limits.messages_per_second, limits.message_burst, now)
        self._cheap = TokenBucket(limits.cheap_per_second, limits.cheap_burst, now)
        self._typing = TokenBucket(limits.typing_per_second, limits.typing_burst, now)
        self._strikes = 0

    def admit(self, now: float) -> bool:
        """Any frame, before it is parsed."""
        return self._all.take(now)

    def take(self, kind: str, now: float) -> bool:
        """The frame's own budget, once its type is known."""
        if kind in TYPING_FRAMES:
            bucket = self._typing
        elif kind in CHEAP_FRAMES:
            bucket = self._cheap
        else:
            return self._costly.take(now)
        if bucket.take(now):
            return True
        # A refused cheap or typing frame is never a strike; nor may it use up the shared
        # budget, or a client that only looks things up (or types) too fast would soon fail
        # `admit` and be closed.
        self._all.give_back()
        return False

    def forgive(self) -> None:
        """A frame within budget: the strikes start again from nothing."""
        self._strikes = 0

    def strike(self, kind: str | None) -> bool:
        """A frame over budget; True when the flood has gone on long enough to close."""
        if kind in CHEAP_FRAMES or kind in TYPING_FRAMES:
            return False
        self._strikes += 1
        return self._strikes >= self._limits.flood_close_after

    def rate_of(self, kind: str | None) -> float:
        limits = self._limits
        if kind is None:
            return limits.messages_per_second + limits.cheap_per_second + limits.typing_per_second
        if kind in TYPING_FRAMES:
            return limits.typing_per_second
        return limits.cheap_per_second if kind in CHEAP_FRAMES else limits.messages_per_second
