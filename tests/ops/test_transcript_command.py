"""`chatd-transcript` reading once: order across files and rooms, formats, filters, notes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from chatd import transcript_cli


def event(kind: str, room: str, seq: int, ts: str, **fields) -> bytes:
    record = {"type": kind, "room": room, "epoch": "e1", "seq": seq, "ts": ts, **fields}
    return json.dumps(record, separators=(",", ":")).encode()


def message(room, seq, ts, sender, text):
    return event("message", room, seq, ts, **{"from": sender, "id": f"m{seq}", "text": text})


def presence(room, seq, ts, user, action):
    return event("presence", room, seq, ts, user=user, event=action)


LINES = {
    "L1": presence("lobby", 1, "2026-11-24T21:18:26.000Z", "alice", "join"),
    "L2": message("lobby", 2, "2026-11-24T21:18:27.491Z", "alice", "hi"),
    "L3": message("lobby", 3, "2026-11-24T21:30:00.000Z", "bob", "Deploy done?"),
    # Not our encoder's spacing, and not ASCII: --json must print it as it is.
    "L4": '{"type": "message", "room": "lobby", "epoch": "e1", "seq": 4,'
    ' "ts": "2026-11-25T08:00:00.000Z", "from": "carol", "id": "m4",'
    ' "text": "Ünïcode \\"quoted\\""}'.encode(),
    "L5": presence("lobby", 5, "2026-11-25T09:15:00.000Z", "bob", "leave"),
    "A1": presence("annex", 1, "2026-11-24T22:00:00.000Z", "Bob", "join"),
    "A2": message("annex", 2, "2026-11-24T22:00:05.000Z", "Bob", "deploying now\nsecond line"),
}
GARBAGE = b"not json"
TORN = b'{"type":"message","room":"lobby","epoch"'
ALL = ["L1", "L2", "L3", "A1", "A2", "L4", "L5"]  # merged by time


@pytest.fixture
def transcripts(tmp_path) -> Path:
    """Two rotated lobby files and the live one (with an unreadable and a torn line), an annex."""
    directory = tmp_path / "transcripts"
    directory.mkdir()
    files = {
        "lobby.2026-11-24T211826Z.jsonl": LINES["L1"] + b"\n" + LINES["L2"] + b"\n",
        "lobby.2026-11-24T211826Z-1.jsonl": LINES["L3"] + b"\n",
        "lobby.jsonl": b"\n".join([LINES["L4"], GARBAGE, LINES["L5"], TORN]),
        "annex.jsonl": LINES["A1"] + b"\n" + LINES["A2"] + b"\n",
        "notes.txt": b"not a transcript\n",
    }
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return directory


def jsonl(*names: str) -> bytes:
    return b"".join(LINES[name] + b"\n" for name in names)


def notes(directory: Path) -> str:
    live = (directory / "lobby.jsonl").read_bytes()
    return (
        f"chatd-transcript: lobby.jsonl: skipped an unreadable line at byte"
        f" {live.index(GARBAGE)}: Expecting value: line 1 column 1 (char 0)\n"
        f"chatd-transcript: lobby.jsonl: skipped an unfinished last line at byte"
        f" {live.index(TORN)} (being written, or torn by a crash)\n"
    )


def test_readable_lines_of_every_room_merged_by_time(run_script, transcripts):
    result = run_script("chatd-transcript", "--dir", transcripts)
    assert result.returncode == 0
    assert result.stdout.decode() == (
        "-- 2026-11-24 --\n"
        "21:18:26 #lobby * alice joined\n"
        "21:18:27 #lobby <alice> hi\n"
        "21:30:00 #lobby <bob> Deploy done?\n"
        "22:00:00 #annex * Bob joined\n"
        "22:00:05 #annex <Bob> deploying now\n"
        "         second line\n"
        "-- 2026-11-25 --\n"
        '08:00:00 #lobby <carol> Ünïcode "quoted"\n'
        "09:15:00 #lobby * bob left\n"
    )
    assert result.stderr.decode() == notes(transcripts)


def test_json_prints_the_transcript_lines_unchanged(run_script, transcripts):
    result = run_script("chatd-transcript", "--dir", transcripts, "--json")
    assert (result.returncode, result.stdout) == (0, jsonl(*ALL))
    assert result.stderr.decode() == notes(transcripts)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--room", "annex"], ["A1", "A2"]),
        (["--user", "BOB"], ["L3", "A1", "A2", "L5"]),  # from or user, ignoring case
        (["--type", "presence"], ["L1", "A1", "L5"]),
        (["--grep", "DEPLOY"], ["L3", "A2"]),
        (["--since", "2026-11-24T22:00", "--until", "2026-11-25"], ["A1", "A2"]),
        (["--since", "2026-11-25T09:00+01:00"], ["L4", "L5"]),
        (["--until", "2026-11-24T21:18:27.491Z"], ["L1"]),
        (["--room", "lobby", "--user", "bob", "--grep", "deploy"], ["L3"]),
        (["-n", "2"], ["L4", "L5"]),
        (["--type", "message", "-n", "1"], ["L4"]),
    ],
)
def test_filters(capsysbinary, transcripts, filters, expected):
    """In-process, for speed: the console script itself is run by the tests around this one."""
    status = transcript_cli.main(["--dir", str(transcripts), "--json", "--quiet", *filters])
    assert (status, *capsysbinary.readouterr()) == (0, jsonl(*expected), b"")


def test_quiet_keeps_the_notes_off_stderr(run_script, transcripts):
    result = run_script("chatd-transcript", "--dir", transcripts, "--quiet")
    assert result.returncode == 0 and result.stdout and result.stderr == b""


def test_the_directory_comes_from_the_daemons_configuration(run_script, transcripts):
    """Relative to the working directory, like the daemon's own paths."""
    (transcripts.parent / "etc").mkdir()
    (transcripts.parent / "etc" / "chatd.ini").write_text(
        "[transcripts]\ndirectory = transcripts\n"
    )
    found = run_script("chatd-transcript", "--json", "-q", cwd=transcripts.parent)
    named = run_script("chatd-transcript", "-c", "etc/chatd.ini", "--json", cwd=transcripts.parent)
    assert found.returncode == named.returncode == 0
    assert found.stdout == named.stdout == jsonl(*ALL)


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--room", "lounge"], 1, "chatd-transcript: no transcript of room lounge in {dir}\n"),
        (["--room", "Lounge!"], 2, "argument --room/-r: not a room name: 'Lounge!'"),
        (["--since", "yesterday"], 2, "argument --since: not an ISO date or time: 'yesterday'"),
        (["-n", "-1"], 2, "argument --lines/-n: not a whole number: '-1'"),
    ],
    ids=["unknown-room", "bad-room", "bad-time", "bad-count"],
)
def test_mistakes_are_one_line_with_a_status(run_script, transcripts, args, status, message):
    result = run_script("chatd-transcript", "--dir", transcripts, *args)
    assert (result.returncode, result.stdout) == (status, b"")
    assert message.format(dir=transcripts) in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_a_missing_directory_is_named(run_script, tmp_path):
    result = run_script("chatd-transcript", "--dir", tmp_path / "absent")
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == f"chatd-transcript: {tmp_path / 'absent'}: no such directory\n"


def test_a_configuration_error_is_the_daemons_line(run_script, tmp_path):
    ini = tmp_path / "chatd.ini"
    ini.write_text("[ws]\nport = banana\n")
    result = run_script("chatd-transcript", "--config", ini)
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode().startswith(f"{ini}: [ws] port: ")
    assert result.stderr.count(b"\n") == 1


def test_a_reader_that_stops_early_ends_it_quietly(
    installed_script: Callable[[str], Path], tmp_path
):
    """`chatd-transcript | head -1`: no BrokenPipeError report, exit status 0."""
    many = b"".join(
        message("lobby", seq, "2026-11-24T21:00:00.000Z", "alice", "x" * 100) + b"\n"
        for seq in range(1, 2001)
    )  # far more than a pipe holds
    (tmp_path / "lobby.jsonl").write_bytes(many)
    process = subprocess.Popen(
        [installed_script("chatd-transcript"), "--dir", tmp_path, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout.readline() == many.split(b"\n")[0] + b"\n"
    process.stdout.close()
    assert process.wait(timeout=10) == 0
    assert process.stderr.read() == b""


def test_an_agents_note_is_printed_marked_and_selected_by_its_type(capsysbinary, tmp_path):
    note = event(
        "note",
        "support-carol",
        2,
        "2026-11-24T21:18:28.000Z",
        **{"from": "ann", "id": "n1", "text": "VIP", "audience": "agent"},
    )
    said = message("support-carol", 1, "2026-11-24T21:18:27.000Z", "carol", "hello")
    (tmp_path / "support-carol.jsonl").write_bytes(said + b"\n" + note + b"\n")
    assert transcript_cli.main(["--dir", str(tmp_path)]) == 0
    assert capsysbinary.readouterr().out.decode().splitlines()[1:] == [
        "21:18:27 #support-carol <carol> hello",
        "21:18:28 #support-carol [note] <ann> VIP",
    ]
    assert transcript_cli.main(["--dir", str(tmp_path), "--json", "--type", "note"]) == 0
    assert capsysbinary.readouterr().out == note + b"\n"
