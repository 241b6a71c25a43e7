import json
import stat
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd import transcript
from chatd.events import Event
from chatd.rooms import Room, message_draft
from chatd.transcript import (
    Rotation,
    TranscriptStore,
    TranscriptWriter,
    rotated_path,
    segment_paths,
)

EPOCH = "e1"
DAY = 86400.0
NOON = datetime(2026, 11, 24, 12, tzinfo=UTC).timestamp()


def events(count: int, *, start_ts: float = NOON, text: str = "hello", epoch: str = EPOCH):
    room = Room("lobby", epoch, memory_events=count or 1, retry_window=0.0)
    return [
        room.sequence(message_draft("alice", "alice", f"c{n}", f"{text} {n}", start_ts + n))
        for n in range(count)
    ]


def write(path: Path, lines: list[bytes], raw_tail: bytes = b"") -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines) + raw_tail)


def seqs(lines: list[bytes]) -> list[int]:
    return [json.loads(line)["seq"] for line in lines]


@pytest.fixture
def store(transcript_dir):
    store = TranscriptStore(transcript_dir)
    store.prepare()
    yield store
    store.close()


def warnings_in(log_events) -> list[str]:
    return [event["log_format"] for event in log_events if event["log_level"].name == "warn"]


# -- the directory and the writer --------------------------------------------------------------


def test_prepare_creates_the_directory_0750(tmp_path, umask_022):
    directory = tmp_path / "var" / "transcripts"
    TranscriptStore(directory).prepare()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750


def test_prepare_accepts_an_existing_directory(store):
    store.prepare()
    assert store.directory.is_dir()


def test_transcript_files_are_created_0640(store, umask_022):
    store.append("lobby", events(1)[0].line, NOON)
    store.flush(fsync=False)
    assert stat.S_IMODE(store.path_of("lobby").stat().st_mode) == 0o640


def test_path_of_refuses_names_that_could_leave_the_directory(store):
    for name in ["../etc/passwd", "a/b", "", ".hidden", "Lobby"]:
        with pytest.raises(ValueError):
            store.path_of(name)


def test_nothing_reaches_the_file_before_flush(store):
    line = events(1)[0].line
    store.writer("lobby")
    store.append("lobby", line, NOON)
    assert not store.path_of("lobby").exists()
    assert store.open_files == 0
    assert store.flush(fsync=False) == []
    assert store.path_of("lobby").read_bytes() == line + b"\n"


def test_flush_with_fsync_writes_the_same_bytes(store):
    lines = [event.line for event in events(3)]
    for line in lines:
        store.append("lobby", line, NOON)
    store.flush(fsync=True)
    assert store.path_of("lobby").read_bytes() == b"".join(line + b"\n" for line in lines)


def test_files_not_written_since_the_last_close_idle_are_closed_and_reopen_on_write(store):
    first, second = events(2)
    for room in ("lobby", "side"):
        store.append(room, first.line, NOON)
    store.flush(fsync=False)
    assert store.open_files == 2
    assert store.close_idle() == 0  # both were written since the last call
    store.append("lobby", second.line, NOON)
    store.flush(fsync=False)
    assert (store.close_idle(), store.open_files) == (1, 1)  # side was idle
    assert (store.close_idle(), store.open_files) == (1, 0)
    store.append("side", second.line, NOON)
    store.flush(fsync=False)
    assert store.open_files == 1
    assert store.path_of("side").read_bytes() == first.line + b"\n" + second.line + b"\n"


def test_a_file_with_lines_waiting_for_the_flush_is_not_closed_as_idle(store):
    first, second = events(2)
    store.append("lobby", first.line, NOON)
    store.flush(fsync=False)
    assert store.close_idle() == 0  # written since the last call
    store.append("lobby", second.line, NOON)
    assert (store.close_idle(), store.open_files) == (0, 1)  # not written since, but dirty
    store.flush(fsync=False)
    assert seqs(store.path_of("lobby").read_bytes().splitlines()) == [1, 2]


def test_release_closes_the_file_and_remove_deletes_every_segment(store, transcript_dir):
    line = events(1)[0].line
    for room in ("kept", "gone"):
        store.append(room, line, NOON)
    store.flush(fsync=False)
    rotated = rotated_path(store.path_of("gone"), NOON)
    rotated.write_bytes(line + b"\n")
    store.release("kept")
    assert store.open_files == 1
    assert sorted(path.name for path in store.remove("gone")) == sorted(
        [rotated.name, "gone.jsonl"]
    )
    assert (store.open_files, store.rooms()) == (0, ["kept"])


def test_read_back_yields_events_newest_first_across_rotations_skipping_bad_lines(store):
    old, new = events(4)[:2], events(4)[2:]
    write(rotated_path(store.path_of("lobby"), NOON), [e.line for e in old])
    write(store.path_of("lobby"), [new[0].line, b"{torn", new[1].line])
    assert [event.seq for event in store.read_back("lobby")] == [4, 3, 2, 1]


def test_writer_appends_to_an_existing_file(store):
    first, second = events(2)
    write(store.path_of("lobby"), [first.line])
    store.append("lobby", second.line, second.ts)
    store.flush(fsync=False)
    assert store.path_of("lobby").read_bytes() == first.line + b"\n" + second.line + b"\n"


def test_rooms_lists_current_and_rotated_transcripts_only(store):
    write(store.path_of("lobby"), [])
    write(store.directory / "old.2026-11-24T000000Z.jsonl", [])
    for stray in ["notes.txt", "lobby.jsonl.1", "UPPER.jsonl", "lobby.jsonl-20261124", "README"]:
        (store.directory / stray).write_text("")
    assert store.rooms() == ["lobby", "old"]


def test_failed_write_is_cut_back_and_reported(store, limited_file_size):
    """A write that fails halfway (here: past RLIMIT_FSIZE) leaves no torn line behind."""
    first, second, third = events(3, text="x" * 200)
    store.append("lobby", first.line, first.ts)
    store.flush(fsync=False)
    size = store.path_of("lobby").stat().st_size
    store.append("lobby", second.line, second.ts)
    limited_file_size(size + 50)  # room for part of the line, not all of it
    failures = store.flush(fsync=False)
    limited_file_size(None)
    assert [room for room, _error in failures] == ["lobby"]
    assert isinstance(failures[0][1], OSError)
    assert store.path_of("lobby").read_bytes() == first.line + b"\n"
    store.append("lobby", third.line, third.ts)
    assert store.flush(fsync=False) == []
    assert store.path_of("lobby").read_bytes() == first.line + b"\n" + third.line + b"\n"


def test_a_failed_room_does_not_stop_the_others(store, limited_file_size):
    big, small = events(1, text="x" * 500)[0], events(1)[0]
    write(store.path_of("big"), [big.line])
    store.append("big", big.line, big.ts)
    store.append("small", small.line, small.ts)
    limited_file_size(len(big.line) + 10)
    failures = store.flush(fsync=False)
    limited_file_size(None)
    assert [room for room, _error in failures] == ["big"]
    assert store.path_of("small").read_bytes() == small.line + b"\n"


# -- recovery ----------------------------------------------------------------------------------


def test_recover_a_room_without_transcript_is_none(store):
    assert store.recover("lobby", keep=10) is None


def test_recover_an_empty_transcript_is_none(store):
    write(store.path_of("lobby"), [])
    assert store.recover("lobby", keep=10) is None


def test_recover_epoch_last_seq_and_recent_events(store):
    written = events(10)
    write(store.path_of("lobby"), [event.line for event in written])
    recovered = store.recover("lobby", keep=4)
    assert (recovered.epoch, recovered.last_seq) == (EPOCH, 10)
    assert recovered.recent == written[-4:]


def test_recover_keeps_at_most_what_there_is(store):
    written = events(3)
    write(store.path_of("lobby"), [event.line for event in written])
    assert store.recover("lobby", keep=100).recent == written


def test_torn_last_line_is_cut_with_a_warning(store, log_events):
    written = events(3)
    torn = written[2].line[:25]
    write(store.path_of("lobby"), [event.line for event in written[:2]], raw_tail=torn)
    recovered = store.recover("lobby", keep=10)
    assert (recovered.last_seq, recovered.recent) == (2, written[:2])
    assert store.path_of("lobby").read_bytes() == written[0].line + b"\n" + written[1].line + b"\n"
    assert any("torn last line" in message for message in warnings_in(log_events))


def test_a_transcript_that_is_only_a_torn_line_is_emptied(store, log_events):
    write(store.path_of("lobby"), [], raw_tail=b'{"type":"mess')
    assert store.recover("lobby", keep=10) is None
    assert store.path_of("lobby").read_bytes() == b""
    assert warnings_in(log_events)


def test_after_a_torn_line_new_events_follow_the_last_intact_one(store):
    """The next seq follows the last complete line, and no complete line's seq repeats."""
    written = events(3)
    write(store.path_of("lobby"), [event.line for event in written[:2]], raw_tail=b'{"seq":3,')
    recovered = store.recover("lobby", keep=10)
    room = Room(
        "lobby",
        recovered.epoch,
        memory_events=10,
        retry_window=0.0,
        recent=recovered.recent,
        last_seq=recovered.last_seq,
    )
    event = room.sequence(message_draft("bob", "bob", "b1", "after the crash", NOON + 60))
    store.append("lobby", event.line, event.ts)
    assert store.flush(fsync=False) == []
    lines = store.path_of("lobby").read_bytes().splitlines()
    assert seqs(lines) == [1, 2, 3]
    assert [Event.from_line(line) for line in lines][-1] == event


def test_history_in_memory_ends_at_an_unreadable_middle_line(store, log_events):
    """Events older than an unreadable line stay on disk (paging skips the bad line) but are
    not in memory, so a resume across the hole is answered recovered: false."""
    written = events(4)
    lines = [written[0].line, written[1].line, b"garbage", written[2].line, written[3].line]
    write(store.path_of("lobby"), lines)
    recovered = store.recover("lobby", keep=10)
    assert (recovered.last_seq, recovered.recent) == (4, written[2:])
    assert len([m for m in warnings_in(log_events) if "unreadable line" in m]) == 1
    assert store.events_before("lobby", written[0].epoch, 5, 10) == [e.line for e in written]


def test_an_unreadable_last_line_uses_up_a_seq_and_empties_memory(store):
    """It may have held a delivered event: its seq is never given out again, and nothing
    before it can be replayed as complete."""
    written = events(2)
    write(store.path_of("lobby"), [written[0].line, written[1].line, b"{not json}"])
    recovered = store.recover("lobby", keep=10)
    assert (recovered.last_seq, recovered.recent) == (3, [])


def test_recover_stops_at_an_older_epoch(store):
    old = events(3, epoch="old")
    new = events(2, epoch="new")
    write(store.path_of("lobby"), [event.line for event in old + new])
    recovered = store.recover("lobby", keep=10)
    assert (recovered.epoch, recovered.last_seq, recovered.recent) == ("new", 2, new)


# -- paging back -------------------------------------------------------------------------------


@pytest.fixture
def large_room(store):
    """About 1.2 MB of transcript: many blocks of the backwards reader."""
    written = events(6000, text="y" * 150)
    write(store.path_of("lobby"), [event.line for event in written])
    return written


@pytest.mark.parametrize("before", [2, 3, 100, 2500, 4097, 5999, 6000, 6001])
def test_events_before_in_a_large_file(store, large_room, before):
    page = store.events_before("lobby", EPOCH, before, limit=50)
    assert page == [event.line for event in large_room[max(before - 51, 0) : before - 1]]


def test_events_before_beyond_the_end_is_the_latest_page(store, large_room):
    page = store.events_before("lobby", EPOCH, 10**12, limit=7)
    assert seqs(page) == list(range(5994, 6001))


def test_events_before_the_first_event_is_empty(store, large_room):
    assert store.events_before("lobby", EPOCH, 1, limit=7) == []


def test_paging_back_through_a_large_file_visits_every_event_once(store, large_room):
    seen: list[int] = []
    before = 10**12
    while page := store.events_before("lobby", EPOCH, before, limit=997):
        seen[:0] = seqs(page)
        before = seqs(page)[0]
    assert seen == list(range(1, 6001))


def test_events_before_of_another_epoch_is_empty(store, large_room):
    assert store.events_before("lobby", "other", 100, limit=10) == []


def test_events_before_without_transcript_is_empty(store):
    assert store.events_before("lobby", EPOCH, 100, limit=10) == []


def test_events_before_skips_unreadable_lines(store):
    written = events(5)
    lines = [event.line for event in written]
    write(store.path_of("lobby"), [lines[0], lines[1], b"junk", lines[2], b"", lines[3], lines[4]])
    assert store.events_before("lobby", EPOCH, 5, limit=3) == lines[1:4]


line_kinds = st.lists(
    st.one_of(st.integers(0, 40), st.sampled_from(["junk", "blank"])), max_size=40
)


@settings(max_examples=150, deadline=None)
@given(
    kinds=line_kinds,
    block=st.integers(1, 64),
    before=st.integers(1, 45),
    limit=st.integers(1, 45),
    keep=st.integers(1, 45),
)
def test_reading_backwards_matches_a_forward_scan(
    tmp_path_factory, kinds, block, before, limit, keep
):
    """With tiny read blocks, paging and recovery agree with a plain forward reading."""
    room = Room("lobby", EPOCH, memory_events=1, retry_window=0.0)
    lines, good = [], []
    for kind in kinds:
        if kind == "junk":
            lines.append(b'{"seq": 1, "broken')
        elif kind == "blank":
            lines.append(b"")
        else:
            event = room.sequence(message_draft("alice", "alice", "c", "z" * kind, NOON))
            lines.append(event.line)
            good.append(event)
    store = TranscriptStore(tmp_path_factory.mktemp("transcripts"))
    write(store.path_of("lobby"), lines)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transcript, "_BLOCK", block)
        page = store.events_before("lobby", EPOCH, before, limit)
        recovered = store.recover("lobby", keep)
    older = [event.line for event in good if event.seq < before]
    assert page == older[-limit:]
    # Recovery keeps the readable events after the last junk line; junk lines after the
    # newest event each use up a seq.
    tail = _split_at_junk(kinds, good)[-1]
    junk_at_end = _junk_after_last_event(kinds)
    if good:
        expected_recent = [] if junk_at_end else tail[-keep:]
        assert (recovered.last_seq, recovered.recent) == (
            good[-1].seq + junk_at_end,
            expected_recent,
        )
    else:
        assert recovered is None


def _split_at_junk(kinds, good):
    """The good events in runs between junk lines, oldest run first."""
    runs, run, events_left = [], [], iter(good)
    for kind in kinds:
        if kind == "junk":
            runs.append(run)
            run = []
        elif kind != "blank":
            run.append(next(events_left))
    runs.append(run)
    return runs


def _junk_after_last_event(kinds) -> int:
    count = 0
    for kind in reversed(kinds):
        if kind == "junk":
            count += 1
        elif kind != "blank":
            return count
    return count


# -- rotation ----------------------------------------------------------------------------------


def test_rotation_is_not_due_for_an_empty_file():
    assert not Rotation(daily=True, max_bytes=1).due(None, 0, NOON + DAY, 100)


def test_daily_rotation_is_due_on_a_new_utc_day():
    rotation = Rotation(daily=True)
    midnight = datetime(2026, 11, 25, tzinfo=UTC).timestamp()
    assert not rotation.due(NOON, 100, midnight - 0.001, 10)
    assert rotation.due(NOON, 100, midnight, 10)


def test_size_rotation_is_due_before_the_file_grows_past_the_limit():
    rotation = Rotation(max_bytes=1000)
    assert not rotation.due(NOON, 900, NOON, 100)
    assert rotation.due(NOON, 900, NOON, 101)


def test_without_rotation_nothing_is_ever_due():
    assert not Rotation().due(NOON, 10**12, NOON + 10 * DAY, 10**6)


def test_rotated_path_is_named_by_the_first_event_and_never_overwrites(tmp_path):
    current = tmp_path / "lobby.jsonl"
    first = rotated_path(current, NOON + 1.9)
    assert first.name == "lobby.2026-11-24T120001Z.jsonl"
    first.write_text("")
    assert rotated_path(current, NOON + 1.9).name == "lobby.2026-11-24T120001Z-1.jsonl"


def test_daily_rotation_moves_yesterday_aside(transcript_dir):
    store = TranscriptStore(transcript_dir, Rotation(daily=True))
    store.prepare()
    today, tomorrow = events(1)[0], events(1, start_ts=NOON + DAY)[0]
    try:
        store.append("lobby", today.line, today.ts)
        store.flush(fsync=False)
        store.append("lobby", tomorrow.line, tomorrow.ts)
        store.flush(fsync=False)
    finally:
        store.close()
    assert [path.name for path in segment_paths(transcript_dir, "lobby")] == [
        "lobby.2026-11-24T120000Z.jsonl",
        "lobby.jsonl",
    ]
    assert (transcript_dir / "lobby.2026-11-24T120000Z.jsonl").read_bytes() == today.line + b"\n"
    assert store.path_of("lobby").read_bytes() == tomorrow.line + b"\n"


def test_size_rotation_never_splits_a_batch_nor_lets_a_file_outgrow_the_limit(transcript_dir):
    written = events(12)
    limit = 4 * (len(written[0].line) + 1)
    store = TranscriptStore(transcript_dir, Rotation(max_bytes=limit))
    store.prepare()
    batches = [written[0:2], written[2:5], written[5:6], written[6:9], written[9:12]]
    try:
        for batch in batches:
            for event in batch:
                store.append("lobby", event.line, event.ts)
            assert store.flush(fsync=False) == []
    finally:
        store.close()
    paths = segment_paths(transcript_dir, "lobby")
    files = [seqs(path.read_bytes().splitlines()) for path in paths]
    assert [seq for file in files for seq in file] == list(range(1, 13))
    assert len(files) > 2
    batch_ends = set(accumulate(len(batch) for batch in batches))
    assert set(accumulate(len(file) for file in files)) <= batch_ends
    single_batches = [[event.seq for event in batch] for batch in batches]
    for file, path in zip(files, paths, strict=True):
        assert path.stat().st_size <= limit or file in single_batches


def test_a_reopened_writer_still_rotates_by_its_files_first_event(transcript_dir):
    today, tomorrow = events(1)[0], events(1, start_ts=NOON + DAY)[0]
    transcript_dir.mkdir()
    write(transcript_dir / "lobby.jsonl", [today.line])
    writer = TranscriptWriter(transcript_dir / "lobby.jsonl", Rotation(daily=True))
    try:
        writer.append(tomorrow.line, tomorrow.ts)
        writer.flush(fsync=False)
    finally:
        writer.close()
    assert len(segment_paths(transcript_dir, "lobby")) == 2


def rotated_room(transcript_dir: Path) -> list[Event]:
    """Events 1..9 in three files: two rotated, the current one holding 7..9."""
    written = events(9)
    transcript_dir.mkdir(parents=True, exist_ok=True)
    write(transcript_dir / "lobby.2026-11-22T000000Z.jsonl", [e.line for e in written[0:3]])
    write(transcript_dir / "lobby.2026-11-23T000000Z.jsonl", [e.line for e in written[3:6]])
    write(transcript_dir / "lobby.jsonl", [e.line for e in written[6:9]])
    return written


def test_segments_are_listed_oldest_first(transcript_dir):
    rotated_room(transcript_dir)
    (transcript_dir / "lobby.2026-11-23T000000Z-1.jsonl").write_text("")
    (transcript_dir / "lobbyx.2026-11-21T000000Z.jsonl").write_text("")
    assert [path.name for path in segment_paths(transcript_dir, "lobby")] == [
        "lobby.2026-11-22T000000Z.jsonl",
        "lobby.2026-11-23T000000Z.jsonl",
        "lobby.2026-11-23T000000Z-1.jsonl",
        "lobby.jsonl",
    ]


def test_recover_reads_back_into_rotated_files(store):
    written = rotated_room(store.directory)
    recovered = store.recover("lobby", keep=5)
    assert (recovered.last_seq, recovered.recent) == (9, written[4:])


def test_recover_after_a_rotation_left_an_empty_current_file(store):
    written = rotated_room(store.directory)
    write(store.path_of("lobby"), [])
    recovered = store.recover("lobby", keep=2)
    assert (recovered.last_seq, recovered.recent) == (6, written[4:6])


def test_events_before_pages_across_rotated_files(store):
    written = rotated_room(store.directory)
    assert store.events_before("lobby", EPOCH, 9, limit=6) == [e.line for e in written[2:8]]
    assert store.events_before("lobby", EPOCH, 3, limit=6) == [e.line for e in written[0:2]]


def test_the_rotated_index_lists_what_rotated_paths_lists_for_every_room(tmp_path):
    for name in (
        "lobby.2026-11-24T000000Z.jsonl",
        "lobby.2026-11-23T000000Z.jsonl",
        "lobby.2026-11-24T000000Z-1.jsonl",
        "other.2026-11-20T101010Z.jsonl",
        "lobby.jsonl",
        "notes.txt",
    ):
        (tmp_path / name).write_text("")
    index = transcript.rotated_index(tmp_path)
    assert set(index) == {"lobby", "other"}
    for room, paths in index.items():
        assert paths == transcript.rotated_paths(tmp_path, room)
    assert [path.name for path in index["lobby"]] == [
        "lobby.2026-11-23T000000Z.jsonl",
        "lobby.2026-11-24T000000Z.jsonl",
        "lobby.2026-11-24T000000Z-1.jsonl",
    ]
