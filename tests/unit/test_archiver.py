"""The archiver's reading of a room's stream and transcript (chatd/redis/archiver.py); the
archiver itself runs against a real redis-server in tests/e2e/test_redis_archiver.py."""

from chatd.redis.archiver import archived_through, check_entries, parse_cursor
from chatd.transcript import Recovered


def line(seq: int, epoch: str = "E1") -> bytes:
    return (
        f'{{"type":"message","room":"lobby","epoch":"{epoch}","seq":{seq},'
        f'"ts":"2026-12-01T06:00:00.000Z","from":"ann","id":"m{seq}","text":"hi"}}'
    ).encode()


def entry(seq: int, data: bytes | None = None) -> list:
    return [f"{seq}-0".encode(), [b"e", line(seq) if data is None else data]]


def test_parse_cursor():
    assert parse_cursor(None) is None
    assert parse_cursor(b"E1 42") == ("E1", 42)
    assert parse_cursor(b"E1") is None
    assert parse_cursor(b"E1 x") is None


def test_archived_through_is_the_transcript_tail_of_the_same_epoch_only():
    tail = Recovered(epoch="E1", last_seq=7, recent=[])
    assert archived_through(tail, "E1") == 7
    assert archived_through(tail, "E2") == 0  # a new epoch: from its seq 1
    assert archived_through(None, "E1") == 0


def test_entries_in_order_are_all_written():
    checked = check_entries([entry(4), entry(5), entry(6)], "E1", after=3)
    assert [event.seq for event in checked.events] == [4, 5, 6]
    assert [event.line for event in checked.events] == [line(4), line(5), line(6)]
    assert checked.gaps == [] and checked.stray is None


def test_a_seq_jump_is_a_gap_reported_and_the_events_after_it_written():
    checked = check_entries([entry(5), entry(9)], "E1", after=2)
    assert checked.gaps == [(3, 4), (6, 8)]
    assert [event.seq for event in checked.events] == [5, 9]


def test_an_entry_of_another_epoch_stops_the_reading():
    other = [b"3-0", [b"e", line(3, epoch="E2")]]
    checked = check_entries([entry(1), entry(2), other, entry(4)], "E1", after=0)
    assert [event.seq for event in checked.events] == [1, 2]
    assert checked.stray == "entry 3-0 is of epoch E2, not E1"


def test_an_entry_that_is_not_an_event_stops_the_reading():
    checked = check_entries([entry(1), entry(2, b"{not json"), entry(3)], "E1", after=0)
    assert [event.seq for event in checked.events] == [1]
    assert checked.stray.startswith("entry 2-0 is not an event")
    checked = check_entries([[b"1-0", [b"x", b"y"]]], "E1", after=0)
    assert checked.events == [] and checked.stray.startswith("entry 1-0 is not an event")


def test_an_entry_under_another_seq_than_its_own_stops_the_reading():
    checked = check_entries([entry(1), [b"2-0", [b"e", line(7)]]], "E1", after=0)
    assert [event.seq for event in checked.events] == [1]
    assert checked.stray == "entry 2-0 holds seq 7"
