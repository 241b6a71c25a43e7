"""The reconnect storm (r, r9) and the connections-up-to-the-limit scenario (m) still run, at
--quick scale: the machinery only (restart, resume, several source addresses, the limit), never
timings."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler for the loadgen")


def summaries(records: list[dict]) -> dict[str, dict]:
    return {r["transport"]: r for r in records if r["kind"] == "summary"}


@pytest.mark.parametrize(("scenario", "how"), [("r", "term"), ("r9", "kill")])
def test_quick_storm_resumes_every_client_after_a_restart(run_quick, scenario, how):
    stdout, records = run_quick(scenario, "chatd")
    assert f"({scenario}) reconnect storm" in stdout, stdout
    by_transport = summaries(records)
    skipped = [r for r in records if r["kind"] == "skipped"]
    assert set(by_transport) | {r["transport"] for r in skipped} == {"ws", "wss"}, stdout
    assert "ws" in by_transport, stdout
    for transport, summary in by_transport.items():
        assert summary["restart"] == how, summary
        # SIGTERM: chatd says 1001 to every client and exits 0; SIGKILL: they see the end.
        assert summary["exit_code"] == (0 if how == "term" else -9), summary
        assert summary["going_away"] == (40 if how == "term" else 0), (transport, summary)
        assert summary["down_closes"] + summary["unnoticed"] == 40, (transport, summary)
        assert summary["history_sent"] > 0 and summary["history_lost"] == 0, summary
        # Every client came back with exactly the events after its `since` (1 missed + the
        # rejoins before it), and the live events after `joined` followed without a gap.
        assert (summary["clients"], summary["back"], summary["all_back"]) == (40, 40, True)
        assert (summary["recovered"], summary["not_recovered"]) == (40, 0), summary
        assert summary["no_resume"] == 0 and summary["history_mismatch"] == 0, summary
        assert summary["history_events"] >= 40, summary
        assert (summary["dups"], summary["gaps"], summary["dropped"]) == (0, 0, 0), summary
        assert summary["down_s"] is not None, summary


def test_quick_storm_against_a_baseline_is_reconnect_and_join_only(run_quick):
    """The C baseline has no resume: its clients are back at `joined`, none `recovered`."""
    stdout, records = run_quick("r9", "c")
    skipped = [r for r in records if r["kind"] == "skipped"]
    if skipped and "libssl-dev" in skipped[0]["reason"]:
        pytest.skip(skipped[0]["reason"])
    summary = summaries(records)["ws"]
    assert (summary["back"], summary["no_resume"], summary["recovered"]) == (40, 40, 0), summary
    assert "no resume" in stdout and "reconnect + join only" in stdout, stdout


def test_quick_connections_up_to_a_lower_open_file_limit(run_quick):
    """Scenario m under a hard limit of 340 open files: it holds what the limit leaves (40 of
    the 60 it wants at --quick), says so, pings them, and fans out to the first room."""
    stdout, records = run_quick("m", "chatd", open_files=340)
    assert "the open-file limit is 340: 40 connections" in stdout, stdout
    assert not [r for r in records if r["kind"] == "skipped"], stdout
    (summary,) = summaries(records).values()
    assert (summary["fd_limit"], summary["clients_wanted"]) == (340, 60), summary
    assert summary["connections"] == summary["connections_at_end"] == 40, summary
    assert summary["kib_per_connection"] is not None, summary
    assert summary["pings"] >= 40 and summary["window_dropped"] == 0, summary
    # r0 holds the first 20 clients (2 source addresses between them); every message reached
    # every member.
    fanout = summary["fanout"]
    assert summary["room_members"] == 20, summary
    assert fanout["sent"] > 0 and fanout["expected"] == fanout["sent"] * 20, fanout
    assert fanout["received"] == fanout["expected"] and fanout["lost"] == 0, fanout
    assert summary["dropped"] == 0 and summary["connect_failures"] == 0, summary
