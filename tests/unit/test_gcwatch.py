"""The garbage collector's pauses, timed through gc.callbacks and exported as metrics."""

import gc

from prometheus_client import CollectorRegistry, generate_latest

from chatd.gcwatch import PYTHON_THRESHOLDS, THRESHOLDS, CollectorWatch


class Ticks:
    def __init__(self, *times: float):
        self._times = list(times)

    def __call__(self) -> float:
        return self._times.pop(0)


def sample(registry, name: str, **labels) -> float | None:
    return registry.get_sample_value(name, labels)


def test_each_collection_is_timed_by_generation_and_the_longest_kept():
    registry = CollectorRegistry()
    watch = CollectorWatch(registry, clock=Ticks(10.0, 10.002, 20.0, 20.150, 30.0, 30.001))
    watch("start", {"generation": 0})
    watch("stop", {"generation": 0})
    watch("start", {"generation": 2})
    watch("stop", {"generation": 2})
    watch("start", {"generation": 0})
    watch("stop", {"generation": 0})
    assert sample(registry, "chatd_gc_pause_seconds_count", generation="0") == 2
    assert sample(registry, "chatd_gc_pause_seconds_count", generation="2") == 1
    assert abs(sample(registry, "chatd_gc_pause_seconds_sum", generation="2") - 0.150) < 1e-9
    assert abs(sample(registry, "chatd_gc_longest_pause_seconds") - 0.150) < 1e-9


def test_installed_it_sees_real_collections_and_removed_it_does_not():
    registry = CollectorRegistry()
    watch = CollectorWatch(registry)
    watch.install()
    try:
        gc.collect()
    finally:
        watch.remove()
    assert sample(registry, "chatd_gc_pause_seconds_count", generation="2") == 1
    assert watch not in gc.callbacks
    gc.collect()
    assert sample(registry, "chatd_gc_pause_seconds_count", generation="2") == 1
    assert b"chatd_gc_longest_pause_seconds" in generate_latest(registry)


def test_installed_it_collects_the_middle_generation_less_often_and_removed_no_more():
    watch = CollectorWatch(CollectorRegistry())
    assert gc.get_threshold() == PYTHON_THRESHOLDS
    watch.install()
    try:
        assert gc.get_threshold() == THRESHOLDS
        assert THRESHOLDS[1] > PYTHON_THRESHOLDS[1]
    finally:
        watch.remove()
    assert gc.get_threshold() == PYTHON_THRESHOLDS
