"""Fixtures of the e2e tests: a small file system to fill up, and several chatd nodes on one
redis-server (Redis mode)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

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


@pytest.fixture
def small_fs(tmp_path) -> Iterator[Path]:
    """A 1 MiB tmpfs (to fill up with `chatd_harness.fill_up`), unmounted afterwards."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
