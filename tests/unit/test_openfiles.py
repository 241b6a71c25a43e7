"""chatd/openfiles.py on this process's real RLIMIT_NOFILE (only the soft limit is lowered,
and restored: an unprivileged process could not raise a lowered hard limit again)."""

import resource

import pytest

from chatd.openfiles import MARGIN, ensure_open_files


@pytest.fixture
def limits():
    previous = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield previous
    resource.setrlimit(resource.RLIMIT_NOFILE, previous)


def messages(log_events) -> list[tuple[str, str]]:
    return [
        (event["log_level"].name, event["log_format"])
        for event in log_events
        if event.get("log_namespace") == "chatd.openfiles"
    ]


def test_the_soft_limit_is_raised_to_the_hard_one(limits, log_events):
    _soft, hard = limits
    if hard == resource.RLIM_INFINITY or hard < 300:
        pytest.skip(f"needs a finite hard limit over 300, not {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    assert ensure_open_files(hard - MARGIN) == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    [(level, line)] = messages(log_events)
    assert level == "info" and "raised from {soft} to {hard}" in line
    assert "room for about {room} connections" in line
    assert (log_events[-1]["soft"], log_events[-1]["room"]) == (256, hard - MARGIN)


def test_the_log_says_how_many_connections_the_limit_allows(limits, log_events):
    """Also when there was nothing to raise (a systemd unit's LimitNOFILE sets both)."""
    _soft, hard = limits
    if hard == resource.RLIM_INFINITY or hard < 300:
        pytest.skip(f"needs a finite hard limit over 300, not {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert ensure_open_files(hard - MARGIN) == hard
    [(level, line)] = messages(log_events)
    assert level == "info" and "room for about {room} connections" in line
    assert (log_events[-1]["limit"], log_events[-1]["room"]) == (hard, hard - MARGIN)


def test_max_connections_over_the_hard_limit_is_warned_about(limits, log_events):
    _soft, hard = limits
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no finite hard limit")
    ensure_open_files(hard)
    [(_level, line)] = [entry for entry in messages(log_events) if entry[0] == "warn"]
    assert "LimitNOFILE=" in line and "ulimit -n" in line
    event = next(event for event in log_events if event.get("needed"))
    assert (event["needed"], event["max_connections"]) == (hard + MARGIN, hard)
