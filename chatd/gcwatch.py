"""How long Python's garbage collector stops the reactor.

Every collection is timed through `gc.callbacks` and exported: `chatd_gc_pause_seconds` by
generation, and the longest pause since start. In many small rooms the heap holds up to
`[history] memory_events` events per room, and full collections of it were measured at 24-210
ms (issue 16): this is how an operator, and the benchmark, see them.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, Histogram


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
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
