"""Redis mode in the bench (issue 12, item 9) still runs, at --quick scale: chatd alone, one
chatd node on a redis-server of its own, two nodes with each room's members spread over both.
The machinery only (the servers start, every message reaches every member across the nodes, the
records carry the new figures), never timings."""

from __future__ import annotations

import os
import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the loadgen")


@pytest.fixture
def redis_server_installed() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (Debian package redis-server)")
        pytest.skip("redis-server is not installed (Debian package redis-server)")


def test_quick_redis_mode_one_and_two_processes(run_quick, redis_server_installed):
    stdout, records = run_quick("c,cpu", "chatd,chatd-redis,chatd-redis-x2")
    assert "(c) many rooms" in stdout and "(cpu) server CPU" in stdout, stdout
    # Only wss may be skipped, and only for a loadgen built without OpenSSL's headers.
    skipped = [r for r in records if r["kind"] == "skipped"]
    assert all(r["transport"] == "wss" and "without TLS" in r["reason"] for r in skipped), stdout
    wss = [] if skipped else ["wss"]
    (run,) = [r for r in records if r["kind"] == "run"]
    assert run["cores"] >= 1 and set(run["redis_pinning"]) == {"chatd-redis", "chatd-redis-x2"}

    summaries = {
        (r["scenario"], r["server"], r["transport"]): r for r in records if r["kind"] == "summary"
    }
    for scenario, transports in (("c", ["ws"]), ("cpu", ["ws", *wss])):
        for transport in transports:
            for server in ("chatd", "chatd-redis", "chatd-redis-x2"):
                summary = summaries[scenario, server, transport]
                # Every message reached every member, once, in order, and was acknowledged.
                assert summary["sent"] > 0 and summary["all_delivered"], summary
                assert summary["received"] == summary["expected"], summary
                assert summary["errors"] == 0 and summary["dropped"] == 0, summary
                assert summary["first"]["server_cpu_us_per_message"] is not None, summary
                if server == "chatd":
                    assert "redis_cpu_us_per_message" not in summary["first"], summary
                    continue
                assert summary["chatd_processes"] == (2 if server.endswith("x2") else 1)
                assert summary["first"]["redis_cpu_us_per_message"] is not None, summary
                assert isinstance(summary["core_bound"], bool) and summary["pinning"], summary
            # Two nodes: each held half of the clients, every room had members on both, so
            # every delivery to the other half crossed through Redis.
            two = summaries[scenario, "chatd-redis-x2", transport]
            assert two["clients_per_server"] == [two["clients"] // 2] * 2, two

    steps = [r for r in records if r["kind"] == "step" and r["server"].startswith("chatd-redis")]
    assert steps and all(step["redis_cpu_s"] >= 0 for step in steps), steps
    costs = {(r["scenario"], r["transport"]): r for r in records if r["kind"] == "redis"}
    assert set(costs) == {("c", "ws"), ("cpu", "ws"), *(("cpu", t) for t in wss)}, costs
    assert "added_us_per_message" in costs["c", "ws"], costs
    assert "x2_us_per_message" in costs["cpu", "ws"], costs
    assert "Redis's cost (c) ws" in stdout, stdout
    # The scaling (its figure may be missing: a loaded machine can fail a quick sweep's steps
    # on latency, which is not the machinery's fault).
    assert "x2_scaling" in costs["c", "ws"] and "x2_peak_scaling" in costs["c", "ws"], costs
    assert "Scaling (c) ws" in stdout, stdout
