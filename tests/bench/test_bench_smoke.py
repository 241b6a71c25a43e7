"""The benchmark still runs: build the loadgen, drive the real daemon at a tiny scale.

Asserts no timings (bench/ prints figures, never judges them), only that load flowed and that
every message reached every client, once and in order.
"""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the loadgen")


@pytest.mark.parametrize("server", ["chatd", "c", "websockets-uvloop"])
def test_quick_fan_out_delivers_everything(run_quick, server):
    """chatd, the C baseline (the only baseline that is new code rather than a library), and
    `websockets` on uvloop (its --uvloop start)."""
    stdout, records = run_quick("a", server)
    assert "(a) fan-out" in stdout, stdout

    skipped = [r for r in records if r["kind"] == "skipped"]
    if server == "c" and skipped and "libssl-dev" in skipped[0]["reason"]:
        pytest.skip(skipped[0]["reason"])
    assert not skipped, stdout
    steps = [r for r in records if r["kind"] == "step"]
    (summary,) = [r for r in records if r["kind"] == "summary"]
    assert (summary["scenario"], summary["server"]) == ("a", server)

    assert steps and all(step["received"] > 0 for step in steps), steps
    assert summary["max"]["delivered_dps"] > 0, summary
    # Every message sent reached every client (the sender too), once, in seq order.
    clients = summary["clients"]
    assert clients == 20, summary
    assert summary["sent"] > 0
    assert summary["expected"] == summary["sent"] * clients, summary
    assert summary["received"] == summary["expected"], summary
    assert (summary["lost"], summary["dups"], summary["gaps"]) == (0, 0, 0), summary
    assert summary["errors"] == 0 and summary["dropped"] == 0, summary
    for step in steps:
        assert step["acks"] == step["sent"], step
        assert step["received"] == step["expected"] == step["sent"] * clients, step
        # The server's CPU in the kernel, a part of its CPU (the table's "sys µs").
        assert 0 <= step["server_sys_s"] <= step["server_cpu_s"], step
    best = summary["max"]  # (the two per-delivery figures are rounded apart: 0.01 of slack)
    assert 0 <= best["server_sys_us_per_delivery"] <= best["server_cpu_us_per_delivery"] + 0.01


def test_quick_keepalive_counts_the_pings(run_quick):
    """Scenario k: chatd pings its idle connections and the loadgen answers and counts them."""
    stdout, records = run_quick("k", "chatd")
    assert "(k) keepalive" in stdout, stdout

    assert not [r for r in records if r["kind"] == "skipped"], stdout
    (window,) = [r for r in records if r["kind"] == "window"]
    (summary,) = [r for r in records if r["kind"] == "summary"]
    assert (summary["scenario"], summary["server"]) == ("k", "chatd")
    assert summary["ping_interval_s"] == 1, summary
    # Every connection was pinged in the window (1 s interval, 3 s window) and none dropped.
    assert summary["connections"] == summary["connections_at_end"] == 50, summary
    assert window["pings"] >= 50, window
    assert summary["window_dropped"] == 0 and summary["connect_failures"] == 0, summary
    assert summary["server_cpu_s"] >= 0, summary


def test_quick_long_steps_report_chatds_collector_pauses(run_quick):
    """Scenario c10: the harness reads chatd's garbage-collection pauses from its /metrics,
    over the whole run and after the clients connected."""
    stdout, records = run_quick("c10", "chatd")
    assert "(c10) many rooms" in stdout, stdout
    (summary,) = [r for r in records if r["kind"] == "summary"]
    assert summary["all_delivered"], summary
    assert summary["gc_longest_pause_ms"] >= 0, summary
    assert summary["gc_full_collections"] >= summary["gc_full_collections_after_connect"] >= 0
    assert summary["gc_longest_pause_after_connect_ms_at_most"] >= 0, summary
    steps = [r for r in records if r["kind"] == "step"]
    assert steps and all(step["gc_full_collections"] >= 0 for step in steps), steps
    assert all(step["gc_longest_pause_ms_at_most"] >= 0 for step in steps), steps


def test_quick_resumed_handshakes_are_resumed(run_quick):
    """Scenario er: each slot offers its previous TLS session, and chatd resumes them (all but
    each slot's first handshake), with none failing."""
    stdout, records = run_quick("er", "chatd")
    assert "(er) handshakes" in stdout, stdout
    skipped = [r for r in records if r["kind"] == "skipped"]
    if skipped and "without TLS" in skipped[0]["reason"]:
        pytest.skip(skipped[0]["reason"])
    (summary,) = [r for r in records if r["kind"] == "summary"]
    assert (summary["scenario"], summary["transport"]) == ("er", "wss"), summary
    assert summary["failed"] == 0 and summary["handshakes"] > 8, summary
    slots = 8  # --quick's concurrency: each slot's first handshake is a full one
    assert summary["resumed"] == summary["handshakes"] - slots, summary
    sys_ms, all_ms = summary["server_sys_ms_per_handshake"], summary["server_cpu_ms_per_handshake"]
    assert 0 <= sys_ms <= all_ms, summary
