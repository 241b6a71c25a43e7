"""The start-up bench still runs: it writes transcripts chatd reads, and measures the real daemon
on them. Machinery only, at 20 files: no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from chatd.events import Event
from chatd.support import customer_of

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "bench" / "startup.py"


def load_startup():
    spec = importlib.util.spec_from_file_location("bench_startup", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_transcripts_are_chatd_transcripts(tmp_path):
    startup = load_startup()
    written = startup.write_transcripts(tmp_path, 20)
    files = sorted(tmp_path.iterdir())
    assert len(files) == written["files"] == 20
    assert (written["support"], written["resolved"]) == (7, 3)
    kinds = set()
    for path in files:
        room = path.name.removesuffix(".jsonl")
        events = [Event.from_line(line) for line in path.read_bytes().splitlines()]
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), path
        assert {e.record["room"] for e in events} == {room}
        assert len({e.epoch for e in events}) == 1
        assert [e.ts for e in events] == sorted(e.ts for e in events)
        kinds.update(e.kind for e in events)
        if room.startswith("support-"):
            assert customer_of(room) is not None
            first_message = next(e for e in events if e.kind == "message")
            assert first_message.sender == customer_of(room)
    assert kinds == {"presence", "message", "status"}


def test_quick_run_measures_the_daemon(tmp_path):
    results = tmp_path / "results.jsonl"
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["kind"], r["files"]) for r in records] == [("startup", 0), ("startup", 20)]
    for record in records:
        assert "failed" not in record, record
        assert 0 < record["listen_s"] <= record["serving_s"], record
        assert record["rss_kib"] > 0 and record["hwm_kib"] >= record["rss_kib"], record
    empty, twenty = records
    assert empty["queue"] == 0 and empty["support_rooms"] == 0, empty
    # 7 support conversations, 3 of them resolved long ago: the queue holds the 4 open ones.
    assert (twenty["support_rooms"], twenty["queue"]) == (7, 4), twenty
    # The first joins of existing rooms after start: loaded from their transcripts.
    assert twenty["join_seq"] > 1 and twenty["join2_seq"] > 1 and twenty["support_join_seq"] > 1
    assert "B/file" in completed.stdout and "µs/file" in completed.stdout, completed.stdout
