"""How long Python's garbage collector stops the reactor.

Every collection is timed through `gc.callbacks` and exported: `chatd_gc_pause_seconds` by
generation, and the longest pause since start: this is how an operator, and the benchmark, see
them. In many small rooms full collections of 24-550 ms came every 5-10 s (issue 16): the
rooms' histories were tracked objects (rooms.py keeps them untracked now), and the thresholds
below made the steady traffic itself bring them.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram

# Python's defaults but the middle generation collected 10 times less often (100 young
# collections between two, not 10). Whatever a reactor turn has in hand when a middle collection
# runs (posts, drafts, frames on their way) moves to the old generation and counts towards the
# next full collection, although it is freed a moment later; full collections come once that
# count reaches a quarter of the old generation, which 10,000 connections make ~350,000 objects
# (200-550 ms to walk). At the defaults that was every 5-10 s in many small rooms; now it is
# the old generation's real growth (new connections) that brings one.
THRESHOLDS = (700, 100, 10)
PYTHON_THRESHOLDS = (700, 10, 10)


class CollectorWatch:
    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._started = 0.0
        self.longest = 0.0
        self._pauses = Histogram(
            "chatd_gc_pause_seconds",
            "Time each garbage collection held the reactor, by generation (2: full).",
            ["generation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        Gauge(
            "chatd_gc_longest_pause_seconds",
            "The longest garbage collection pause since the daemon started.",
            registry=registry,
        ).set_function(lambda: self.longest)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = self._clock()
            return
        pause = self._clock() - self._started
        self._pauses.labels(str(info["generation"])).observe(pause)
        self.longest = max(self.longest, pause)

    def install(self) -> None:
        """Time every collection from now on, collecting at chatd's `THRESHOLDS`."""
        gc.set_threshold(*THRESHOLDS)
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        """Stop timing, and give the collector Python's own thresholds back."""
        gc.set_threshold(*PYTHON_THRESHOLDS)
        if self in gc.callbacks:
            gc.callbacks.remove(self)
