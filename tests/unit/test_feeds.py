"""chatd/redis/feeds.py: a node's replica of a room is fed in seq order, whatever order pub/sub
brings events in. The two Redis links are an in-memory stand-in that records each command and
answers when the test says; the Feeds, the rooms and the clock's timers are the real ones."""

from __future__ import annotations

import json

import pytest
from redis_stand_in import Link
from twisted.internet.task import Clock

from chatd.events import Event
from chatd.redis.feeds import Feeds
from chatd.redis.keys import Keys
from chatd.rooms import Room

KEYS = Keys("chatd")
ROOM = "lobby"
CHANNEL = KEYS.channel(ROOM).encode()
GAP_TIMEOUT = 0.5


def line(seq: int, epoch: str = "E1") -> bytes:
    return json.dumps(
        {
            "type": "message",
            "room": ROOM,
            "epoch": epoch,
            "seq": seq,
            "ts": "2026-12-01T06:00:00.000Z",
            "from": "ann",
            "name": "ann",
            "id": f"m{seq}",
            "text": f"hi {seq}",
        },
        separators=(",", ":"),
    ).encode()


class Harness:
    def __init__(self):
        self.clock = Clock()
        self.commands, self.subscriber = Link(), Link()
        self.delivered: list[int] = []
        self.batches: list[list[int]] = []
        self.own: list[int] = []
        self.resets: list[str] = []
        self.transcript: list[Event] = []
        self.ephemeral: list[tuple[str, bytes]] = []
        self.feeds = Feeds(
            self.clock,
            self.commands,
            self.subscriber,
            KEYS,
            make_room=self.make_room,
            deliver=self.deliver,
            reset=lambda room, why: self.resets.append(why),
            memory_events=lambda name: 100,
            read_transcript=self.read_transcript,
            gap_timeout=GAP_TIMEOUT,
            ephemeral=lambda room, payload: self.ephemeral.append((room.name, payload)),
        )

    @staticmethod
    def make_room(name, epoch, recent, seq) -> Room:
        return Room(name, epoch, memory_events=100, retry_window=60, recent=recent, last_seq=seq)

    def deliver(self, room: Room, events: list[Event], own: list[Event]) -> None:
        for event in events:
            room.commit(event)  # as the pipeline's deliver_sequenced does
        self.batches.append([event.seq for event in events])
        self.delivered += [event.seq for event in events]
        self.own += [event.seq for event in own]

    def read_transcript(self, name, epoch, after, limit) -> list[Event]:
        return [e for e in self.transcript if e.epoch == epoch and e.seq > after][:limit]

    def take_on(self, seq: int = 0, epoch: str = "E1", early: list[bytes] = ()) -> Room:
        taken = self.feeds.take_on(ROOM, epoch)
        args, subscribed = self.subscriber.take("SUBSCRIBE")
        assert args == ("SUBSCRIBE", CHANNEL)
        subscribed.callback([b"subscribe", CHANNEL, 1])
        for pushed in early:  # heard while the snapshot is read
            self.push(pushed, end=False)
        _args, snapshot = self.commands.take("sync")
        snapshot.callback([epoch.encode(), seq, [], [], [], []])
        rooms = []
        taken.addCallback(rooms.append)
        return rooms[0]

    def push(self, data: bytes, end: bool = True) -> None:
        self.feeds.on_push([b"message", CHANNEL, data])
        if end:
            self.feeds.end_of_chunk()

    def answer_fill(self, start: int, seqs: list[int]) -> None:
        args, reply = self.commands.take("XRANGE")
        assert args == ("XRANGE", KEYS.log(ROOM), f"{start}-0", "+", "COUNT", 1000), args
        reply.callback([(f"{seq}-0".encode(), [b"e", line(seq)]) for seq in seqs])


@pytest.fixture
def feeds() -> Harness:
    return Harness()


def test_events_in_order_are_delivered_per_chunk(feeds):
    room = feeds.take_on()
    feeds.push(line(1), end=False)
    feeds.push(line(2), end=False)
    assert feeds.delivered == []  # not before the end of the chunk
    feeds.feeds.end_of_chunk()
    assert feeds.batches == [[1, 2]]
    assert room.committed_seq == 2
    assert feeds.commands.calls == []  # no gap: nothing read


def test_an_event_that_skips_a_seq_waits_for_the_gap_to_be_read_from_the_log(feeds):
    feeds.take_on()
    feeds.push(line(1))
    feeds.push(line(3))
    feeds.push(line(4))
    assert feeds.delivered == [1]  # 3 and 4 wait for 2

    feeds.answer_fill(2, [2, 3, 4])  # the log has it (and what the channel brought too)

    assert feeds.delivered == [1, 2, 3, 4]
    feeds.push(line(5))
    assert feeds.delivered == [1, 2, 3, 4, 5]


def test_a_gap_trimmed_from_the_log_is_read_from_the_transcript(feeds):
    feeds.take_on()
    feeds.push(line(3))
    feeds.transcript = [Event.from_line(line(seq)) for seq in (1, 2)]

    feeds.answer_fill(1, [3])  # the archiver trimmed 1 and 2 from the stream

    assert feeds.delivered == [1, 2, 3]
    assert feeds.resets == []


def test_events_missing_everywhere_make_the_room_join_again(feeds):
    feeds.take_on()
    feeds.push(line(3))
    feeds.answer_fill(1, [3])  # neither log nor transcript has 1 and 2
    assert feeds.delivered == []
    assert feeds.resets == ["events are missing"]


def test_duplicates_are_dropped(feeds):
    feeds.take_on()
    feeds.push(line(1))
    feeds.push(line(1))
    feeds.push(line(3))
    feeds.push(line(3))  # heard twice while waiting
    feeds.answer_fill(2, [1, 2, 3])  # a fill that overlaps what was delivered
    feeds.push(line(2))
    feeds.push(line(3))
    assert feeds.delivered == [1, 2, 3]


def test_events_older_than_the_snapshot_are_dropped_and_newer_ones_kept(feeds):
    room = feeds.take_on(seq=5, early=[line(5), line(6)])
    assert room.committed_seq == 6
    assert feeds.delivered == [6]


def test_an_event_of_another_epoch_resets_the_room(feeds):
    feeds.take_on(seq=2)
    feeds.push(line(3, epoch="E2"))
    assert feeds.resets == ["the room's history restarted"]
    assert feeds.delivered == []


def test_an_ack_waiter_fires_only_once_its_seq_is_delivered(feeds):
    feeds.take_on()
    fired = []
    feeds.feeds.delivered(ROOM, "E1", 2, own=True).addCallback(fired.append)
    feeds.push(line(1))
    assert fired == []
    assert feeds.delivered == [1]
    feeds.push(line(2))
    assert fired == [None]
    assert feeds.own == [2]  # this node posted it
    # Already delivered: at once.
    again = []
    feeds.feeds.delivered(ROOM, "E1", 2, own=False).addCallback(again.append)
    assert again == [None]


def test_an_ack_whose_event_the_channel_never_brings_is_read_from_the_log(feeds):
    feeds.take_on()
    fired = []
    feeds.feeds.delivered(ROOM, "E1", 1, own=True).addCallback(fired.append)
    feeds.clock.advance(GAP_TIMEOUT - 0.01)
    assert feeds.commands.calls == []  # the channel has a moment to bring it
    feeds.clock.advance(0.02)
    feeds.answer_fill(1, [1])
    assert fired == [None]
    assert feeds.delivered == [1]
    assert feeds.own == [1]


def test_channels_and_patterns_that_are_no_rooms_are_heard_and_subscribed_again(feeds):
    heard, matched = [], []
    feeds.feeds.listen(b"chatd:notices", heard.append)
    feeds.feeds.listen_pattern(b"chatd:{support-*}:events", lambda c, p: matched.append((c, p)))
    assert [args for args, _reply in feeds.subscriber.calls] == [
        ("SUBSCRIBE", b"chatd:notices"),
        ("PSUBSCRIBE", b"chatd:{support-*}:events"),
    ]
    feeds.subscriber.calls.clear()
    feeds.take_on()

    feeds.feeds.on_push([b"message", b"chatd:notices", b"{}"])
    feeds.feeds.on_push(
        [b"pmessage", b"chatd:{support-*}:events", b"chatd:{support-a}:events", b"x"]
    )
    feeds.feeds.on_push([b"pmessage", b"chatd:other", b"chatd:other", b"y"])  # not ours: dropped
    feeds.push(line(1))  # the room's own channel still reaches the room only
    assert heard == [b"{}"]
    assert matched == [(b"chatd:{support-a}:events", b"x")]
    assert feeds.delivered == [1]

    for resubscribe in feeds.subscriber.on_up:  # the subscriber connection came back
        resubscribe(None)
    assert sorted(args for args, _reply in feeds.subscriber.calls) == [
        ("PSUBSCRIBE", b"chatd:{support-*}:events"),
        ("SUBSCRIBE", b"chatd:notices"),
        ("SUBSCRIBE", CHANNEL),
    ]


def test_what_is_no_event_on_a_room_s_channel_is_handed_over_not_delivered(feeds):
    feeds.take_on(early=[b"~node-b ann\n{}"])  # heard while the snapshot was read: dropped
    feeds.push(b"~node-b ann\n{}")
    feeds.push(line(1))
    assert feeds.ephemeral == [(ROOM, b"node-b ann\n{}")]
    assert feeds.delivered == [1]  # the seq order is not disturbed
