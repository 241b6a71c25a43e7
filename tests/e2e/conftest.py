"""Fixtures for the e2e tests of Redis mode: several chatd nodes on one redis-server."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from chatd_harness import Daemon
from cluster_settings import COMMAND_TIMEOUT, CUTOFF, NODE_LEASE


@pytest.fixture
def make_node(make_daemon, redis_server, tmp_path) -> Callable[..., Daemon]:
    """`make_node("a", **sections)`: a chatd node on the test's redis-server. Every node
    shares one transcript directory (as nodes on one host do); keyword arguments are INI
    sections merged over the cluster's."""
    shared = tmp_path / "transcripts"

    def make(node: str, start: bool = True, **overrides: dict[str, object]) -> Daemon:
        sections: dict[str, dict[str, object]] = {
            "transcripts": {"directory": shared, "rotate": "never"},
            "redis": {
                "url": redis_server.url,
                "node": node,
                "node_lease": f"{NODE_LEASE}s",
                "probe_interval": "0.2s",
                "cutoff": f"{CUTOFF}s",
                "command_timeout": f"{COMMAND_TIMEOUT}s",
                "connect_timeout": "1s",
            },
        }
        for section, values in overrides.items():
            sections.setdefault(section, {}).update(values)
        daemon = make_daemon(start=False, **sections)
        daemon.transcripts = shared
        return daemon.start() if start else daemon

    return make


@pytest.fixture
def cluster(make_node) -> list[Daemon]:
    """Two running nodes, a and b, on one redis-server."""
    return [make_node("a"), make_node("b")]
